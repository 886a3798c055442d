"""The no-sign-in name cookie: only checked names go in, and none can end the script."""

from __future__ import annotations

import json
import re
import urllib.parse

import pytest

from core.users.name_cookie import clean_name, name_cookie_script, name_from_cookie


def test_a_name_cannot_end_the_script_and_comes_back_whole():
    name = "Zoë </script><script>alert(1)</script> & 'x' \u2028 y"
    with pytest.raises(ValueError):
        name_cookie_script(name)  # U+2028 is a control/separator character: refused
    name = name.replace("\u2028 ", "")
    script = name_cookie_script(name)
    body = script[len("<script>"):-len("</script>")]
    assert "<" not in body and ">" not in body and "&" not in body
    literal = re.search(r"encodeURIComponent\((\".*?\")\)", body).group(1)
    assert json.loads(literal) == name
    assert name_from_cookie(urllib.parse.quote(name, safe="")) == name.strip()


def test_bad_cookie_values_are_ignored():
    assert name_from_cookie(None) is None and name_from_cookie("") is None
    assert name_from_cookie("%FF%FE") is None  # not UTF-8
    assert name_from_cookie("a%0Ab") is None  # a newline
    assert name_from_cookie("x" * 65) is None
    assert clean_name("  Ann  ") == "Ann"
    assert "Max-Age=0" in name_cookie_script(None)
