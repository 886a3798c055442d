"""Small helpers for the words shown to users: counts with the right plural."""

from __future__ import annotations


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "image")`` -> ``"1 image"``, ``plural(2400, "image")`` -> ``"2,400 images"``.

    ``plural_form`` for words that do not just take an "s" (``plural(2, "class", "classes")``).
    """
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"
