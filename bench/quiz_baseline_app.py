"""Baseline for bench/quiz_browser.py: the least Streamlit itself does for the same visible steps.

A fragment with two 256 px uncompressed PNG images (the quiz's served length), a button on
key 1 that shows an alert ("the answer") and a button on Enter that shows two new images
("the next round"): no database, no dealing, no rendering. Its times are what any
Streamlit page costs on this machine for those steps; the quiz is measured against them.
"""

from __future__ import annotations

import secrets
import sys
from pathlib import Path

import numpy as np
import streamlit as st
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from core.quiz.serving import NONCE_BYTES, encode_fixed_png  # noqa: E402


def _new_images() -> list[bytes]:
    rng = np.random.default_rng()
    return [encode_fixed_png(Image.fromarray(rng.integers(0, 255, (256, 256, 3), dtype=np.uint8)),
                             secrets.token_bytes(NONCE_BYTES)) for _ in range(2)]


def _answer() -> None:
    st.session_state["answered"] = True


def _next() -> None:
    st.session_state["answered"] = False
    st.session_state["images"] = _new_images()


@st.fragment
def _play() -> None:
    if "images" not in st.session_state:
        _next()
    if st.session_state.get("answered"):
        st.success("Answered")
        st.button("Next round", key="next", on_click=_next, shortcut="Enter")
    for position, (cell, data) in enumerate(zip(st.columns(2), st.session_state["images"])):
        with cell:
            st.image(data, width=256, output_format="PNG")
            if position == 0 and not st.session_state.get("answered"):
                st.button("This one", key="pick_0", on_click=_answer, shortcut="1")


st.title("Baseline")
_play()
