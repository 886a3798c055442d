"""Plotly figures for the Explain page: the heatmap over the image, predictions, margins."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import plotly.graph_objects as go

from core.explain.overlay import display_scale, is_signed, plotly_colorscale
from core.figure_layout import readable


def attribution_figure(pixels: np.ndarray, attribution: np.ndarray, *, opacity: float = 0.55,
                       title: str | None = None, subtitle: str | None = None,
                       content_box: tuple[int, int, int, int] | None = None,
                       height_px: int = 420) -> go.Figure:
    """The model's input with the attribution heatmap over it; hovering shows each value."""
    pixels = np.asarray(pixels, dtype=np.uint8)
    values = np.asarray(attribution, dtype=np.float64)
    if pixels.shape[:2] != values.shape:
        raise ValueError(f"map {values.shape} does not match image {pixels.shape[:2]}")
    signed = is_signed(values)
    scale = display_scale(values)
    figure = go.Figure()
    figure.add_trace(go.Image(z=pixels, hoverinfo="skip", name="input"))
    figure.add_trace(go.Heatmap(
        z=values, opacity=opacity, colorscale=plotly_colorscale(signed),
        zmin=-scale if signed else 0.0, zmax=scale, zmid=0.0 if signed else None,
        colorbar={"title": {"text": "attribution"}, "thickness": 12},
        hovertemplate="x=%{x}, y=%{y}<br>attribution=%{z:.4g}<extra></extra>", name="attribution"))
    if content_box is not None:
        left, top, right, bottom = content_box
        figure.add_shape(type="rect", x0=left - 0.5, y0=top - 0.5, x1=right - 0.5, y1=bottom - 0.5,
                         line={"color": "cyan", "width": 1, "dash": "dot"})
    figure.update_xaxes(visible=False, range=[-0.5, pixels.shape[1] - 0.5], constrain="domain")
    figure.update_yaxes(visible=False, range=[pixels.shape[0] - 0.5, -0.5], scaleanchor="x")
    figure.update_layout(height=height_px)
    # Drawn in the middle half of the Explain page: ~260 px on a laptop with the sidebar open.
    return readable(figure, title, subtitle=subtitle, width_px=250, margin={"l": 0, "r": 0, "b": 0})


def probabilities_figure(class_names: Sequence[str], probabilities: Sequence[float], *,
                         top: int = 5, highlight: str | None = None) -> go.Figure:
    """Horizontal bars of the ``top`` classes, most likely on top."""
    order = np.argsort(np.asarray(probabilities))[::-1][:top]
    names = [class_names[i] for i in order][::-1]
    probs = [float(probabilities[i]) for i in order][::-1]
    colours = ["#d62728" if name == highlight else "#1f77b4" for name in names]
    figure = go.Figure(go.Bar(x=probs, y=names, orientation="h", marker_color=colours,
                              text=[f"{p:.1%}" for p in probs], textposition="auto",
                              hovertemplate="%{y}: %{x:.2%}<extra></extra>"))
    figure.update_xaxes(range=[0, 1], tickformat=".0%")
    figure.update_layout(height=60 + 28 * len(names))
    # No title, but a strip for the toolbar, which otherwise covers the top bar (the
    # Explain page also hides the toolbar of this narrow chart, where it takes two rows).
    return readable(figure, margin={"l": 0, "r": 0, "b": 0})


def margin_figure(rows: Sequence[dict]) -> go.Figure:
    """Mean margin attribution mass per run and source, against the margin's area share.

    ``rows``: dicts with ``label``, ``source``, ``mean_margin_mass``, ``mean_margin_area``.
    Each source's filled bar (attribution) sits inside an outlined bar (area), so a filled
    bar that overflows its outline means more attention on the margins than their size.
    """
    palette = {"real": "#1f77b4", "synthetic": "#d62728", "upload": "#7f7f7f"}
    figure = go.Figure()
    for source in sorted({row["source"] for row in rows}):
        subset = [row for row in rows if row["source"] == source]
        labels = [row["label"] for row in subset]
        colour = palette.get(source, "#2ca02c")
        figure.add_trace(go.Bar(name=f"{source}: attribution on margins", x=labels,
                                y=[row["mean_margin_mass"] for row in subset], offsetgroup=source,
                                marker_color=colour,
                                hovertemplate="%{x}: %{y:.1%} of the attribution<extra></extra>"))
        figure.add_trace(go.Bar(name=f"{source}: margins' share of the area", x=labels,
                                y=[row["mean_margin_area"] for row in subset], offsetgroup=source,
                                marker={"color": "rgba(0,0,0,0)", "line": {"color": colour, "width": 2}},
                                hovertemplate="%{x}: %{y:.1%} of the pixels<extra></extra>"))
    figure.update_yaxes(tickformat=".0%", rangemode="tozero")
    figure.update_layout(barmode="group", height=340)
    return readable(figure, margin={"l": 0, "r": 0, "b": 0})
