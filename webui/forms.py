"""A page form that comes back as the user left it (issue 15), over core.users.form_memory.

Usage on a page, once per run::

    form = RememberedForm("generate", user, KEYS, settings)
    form.recall("gen_steps", within(1, 50))   # before the widget with that key
    ...widgets...
    form.save()                               # at the end of the run

A remembered value is put back once per browser session (and again when the user's name
changes), and only if ``accepts`` says the widget still takes it: models and classes come
and go, and a value outside a widget's options or bounds would make Streamlit raise.

Within a session the values are also kept under a key of the form's own: Streamlit drops a
widget's value once a run of another page leaves the widget out, so coming back to the page
showed every number at its minimum and the typed text gone (and saved that as the form).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import streamlit as st

from core.config import Settings
from core.users.form_memory import load_form, save_form


def within(low: float, high: float, kind: type = int) -> Callable[[Any], bool]:
    """``accepts`` for a number input bounded by ``low`` and ``high``."""
    return lambda v: (isinstance(v, (int, float)) and not isinstance(v, bool)
                      and low <= kind(v) <= high)


class RememberedForm:
    def __init__(self, form: str, user: str, keys: tuple[str, ...], settings: Settings) -> None:
        self.form, self.user, self.keys, self.settings = form, user, keys, settings
        owner_key, self._saved_key = f"_form_{form}_user", f"_form_{form}_saved"
        self._kept_key = f"_form_{form}_kept"  # this session's last values (not a widget key)
        self.restoring = st.session_state.get(owner_key) != user
        if self.restoring:
            st.session_state[owner_key] = user
            st.session_state[self._saved_key] = load_form(user, form, settings)

    def recall(self, key: str, accepts: Callable[[Any], bool]) -> None:
        """Put back ``key``'s remembered value on this session's first run, or its value
        from this session's last run of the page when a visit to another page dropped it;
        only if accepted."""
        if self.restoring:
            remembered = st.session_state.get(self._saved_key) or {}
        elif key not in st.session_state:
            remembered = st.session_state.get(self._kept_key) or {}
        else:
            return
        if key not in remembered:
            return
        try:
            ok = bool(accepts(remembered[key]))
        except (TypeError, ValueError):
            ok = False
        if ok:
            st.session_state[key] = remembered[key]

    def save(self) -> None:
        """Remember the form's current values (a file write only when one changed)."""
        values = {key: st.session_state[key] for key in self.keys if key in st.session_state}
        st.session_state[self._kept_key] = values
        save_form(self.user, self.form, values, self.settings)
