"""No user text is ever rendered as HTML: raw-HTML calls in the UI may only take literals."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _is_literal(node: ast.AST) -> bool:
    if isinstance(node, ast.Constant):
        return isinstance(node.value, str)
    if isinstance(node, ast.JoinedStr):  # an f-string is literal only without placeholders
        return all(isinstance(part, ast.Constant) for part in node.values)
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Add):
        return _is_literal(node.left) and _is_literal(node.right)
    return False


# Builders that return HTML made only from values they check themselves (and test).
# core.users.sessions.cookie_script: a checked token and an int; core.users.name_cookie.
# name_cookie_script: a checked name as an escaped JSON string (tests/test_name_cookie.py).
VETTED_BUILDERS = {"cookie_script", "name_cookie_script"}


def _is_vetted(node: ast.AST) -> bool:
    return isinstance(node, ast.Call) and _callee_name(node) in VETTED_BUILDERS


def _callee_name(call: ast.Call) -> str:
    func = call.func
    if isinstance(func, ast.Attribute):
        return func.attr
    if isinstance(func, ast.Name):
        return func.id
    return ""


def unsafe_html_calls(source: str, filename: str = "<source>") -> list[str]:
    """Raw-HTML calls whose content is not a literal, as 'file:line: call'."""
    problems = []
    for node in ast.walk(ast.parse(source, filename)):
        if not isinstance(node, ast.Call):
            continue
        name = _callee_name(node)
        raw_flag = next((kw.value for kw in node.keywords if kw.arg == "unsafe_allow_html"), None)
        raw = (raw_flag is not None and not (isinstance(raw_flag, ast.Constant)
                                             and raw_flag.value is False)) or name == "html"
        if not raw:
            continue
        content = node.args[0] if node.args else next(
            (kw.value for kw in node.keywords if kw.arg in ("body", "html")), None)
        if content is None or not (_is_literal(content) or _is_vetted(content)):
            problems.append(f"{filename}:{node.lineno}: {name}(...) renders non-literal HTML")
    return problems


def _ui_files() -> list[Path]:
    files = sorted((ROOT / "pages").glob("*.py")) + sorted((ROOT / "webui").glob("*.py"))
    return files + [ROOT / "app.py"]


def test_ui_renders_no_dynamic_html():
    files = _ui_files()
    assert any(f.name == "admin.py" for f in files) and any(f.name == "page.py" for f in files)
    problems = [p for f in files for p in unsafe_html_calls(f.read_text(), str(f.relative_to(ROOT)))]
    assert not problems, "user text could be rendered as HTML:\n" + "\n".join(problems)


def test_the_check_catches_dynamic_html():
    bad = '''
import streamlit as st
import streamlit.components.v1 as components
name = st.text_input("name")
st.markdown(f"<b>{name}</b>", unsafe_allow_html=True)
st.html("<p>" + name + "</p>")
components.html(name)
st.write(name, unsafe_allow_html=flag)
'''
    assert len(unsafe_html_calls(bad)) == 4
    good = '''
import streamlit as st
st.markdown("<style>.x{color:red}</style>", unsafe_allow_html=True)
st.markdown(user_text)
st.markdown(user_text, unsafe_allow_html=False)
st.html("<hr/>")
'''
    assert unsafe_html_calls(good) == []


def test_escape_markdown_makes_user_text_inert():
    from webui import escape_markdown

    escaped = escape_markdown("![x](http://evil/t.png) **bold** <b>hi</b> `code`")
    for inert in ("\\!\\[x\\]\\(", "\\*\\*bold", "\\<b\\>", "\\`code\\`"):
        assert inert in escaped
    assert escaped.replace("\\", "").replace("\u2060", "") == \
        "![x](http://evil/t.png) **bold** <b>hi</b> `code`"
    # Bare addresses are autolinked after unescaping: a word joiner breaks them (issue 13).
    for text in ("http://example.invalid/p", "www.example.invalid", "a@example.invalid"):
        assert text not in escape_markdown(text).replace("\\", "")


def test_the_session_cookie_script_takes_only_a_token():
    import pytest

    from core.users.sessions import cookie_script

    token = "A" * 43
    assert f"synthlab_session={token}; Max-Age=60;" in cookie_script(token, 60)
    assert "synthlab_session=; Max-Age=0;" in cookie_script(None, 60)
    for bad in ("x' ; alert(1) //" + "a" * 30, "A" * 42, "A" * 44, "<script>" + "A" * 35):
        with pytest.raises(ValueError):
            cookie_script(bad, 60)


def test_a_call_to_an_unvetted_builder_is_still_refused():
    assert unsafe_html_calls("st.html(make_page(x), unsafe_allow_javascript=True)")
    assert not unsafe_html_calls("st.html(cookie_script(t, 5), unsafe_allow_javascript=True)")
