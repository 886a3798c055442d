"""Small helpers for the words shown to users: counts with the right plural."""

from __future__ import annotations

import re


def plural(count: int, singular: str, plural_form: str | None = None) -> str:
    """``plural(1, "image")`` -> ``"1 image"``, ``plural(2400, "image")`` -> ``"2,400 images"``.

    ``plural_form`` for words that do not just take an "s" (``plural(2, "class", "classes")``).
    """
    word = singular if count == 1 else (plural_form or f"{singular}s")
    return f"{count:,} {word}"


def sentence(text: object) -> str:
    """A message as users read it: trimmed, no exception class name, first word with a capital.

    Core raises short lowercase messages (they also go into logs and ``error: ...`` lines
    of the CLI); the dashboard shows them as sentences. A message that opens with a name
    (``broken.png: not an image``, ``apple: ...``) keeps the name as it is written.
    """
    # A failed job records "SourceError: path does not exist"; the class name is for logs.
    message = re.sub(r"^[A-Z]\w*(?:Error|Exception|Denied|Refused|Rejected): ", "",
                     str(text).strip())
    first = message.split(maxsplit=1)[0] if message else ""
    if re.fullmatch(r"[a-z][a-z'-]*,?", first):
        return message[:1].upper() + message[1:]
    return message
