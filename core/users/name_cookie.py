"""The name a visitor gives in the no-sign-in mode, remembered by the browser in a cookie.

Without sign-in anyone may type any name, so the cookie proves nothing: it only saves
retyping, so that jobs and quiz answers are not attributed to "anonymous" after a reload.
The name is user text that goes into a page script, so it is checked and written only as
an escaped JavaScript string literal, URI-encoded into the cookie.
"""

from __future__ import annotations

import json
import unicodedata
import urllib.parse

COOKIE_NAME = "synthlab_name"
MAX_NAME_LENGTH = 64
MAX_AGE_SECONDS = 365 * 86_400


def clean_name(value: object) -> str | None:
    """``value`` as a display name (trimmed), or None when it is empty, too long or holds
    control characters (what a cookie someone else wrote might carry)."""
    if not isinstance(value, str):
        return None
    name = value.strip()
    if not name or len(name) > MAX_NAME_LENGTH:
        return None
    if any(unicodedata.category(ch)[0] == "C" or unicodedata.category(ch) in ("Zl", "Zp")
           for ch in name):
        return None
    return name


def name_from_cookie(raw: str | None) -> str | None:
    """The name stored by ``name_cookie_script`` (URI-encoded), checked again on the way in."""
    if not raw:
        return None
    try:
        return clean_name(urllib.parse.unquote(raw, errors="strict"))
    except UnicodeDecodeError:
        return None


def name_cookie_script(name: str | None) -> str:
    """A page script that stores ``name`` in the cookie (None or empty: deletes it).

    The name goes in as a JSON string with ``<``, ``>``, ``&`` and every non-ASCII character
    escaped, so it cannot end the script element nor the string; the browser URI-encodes it.
    """
    value = clean_name(name) if name else None
    if name and value is None:
        raise ValueError(f"not a usable name: at most {MAX_NAME_LENGTH} printable characters")
    literal = (json.dumps(value or "", ensure_ascii=True)
               .replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026"))
    age = MAX_AGE_SECONDS if value else 0
    return ("<script>(function(){var s=window.location.protocol==='https:'?'; Secure':'';"
            f"document.cookie='{COOKIE_NAME}='+encodeURIComponent({literal})+"
            f"'; Max-Age={age}; Path=/; SameSite=Strict'+s;}})();</script>")
