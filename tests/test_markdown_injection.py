"""User text is shown as text on every page (issue 13, point 8): class, dataset, job and
user names carrying markdown links, images or bare web addresses must not become links or
images. AppTest shows the markdown each element renders; a payload counts as live when it
still holds a link or image opener or an unbroken web address (Streamlit's GFM autolinks
"http://..." even when its colon is escaped: checked in Chromium, see webui.escape_markdown).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from streamlit.testing.v1 import AppTest

from tests.imagemaker import make_imagefolder

ROOT = Path(__file__).resolve().parent.parent
HOSTS = ("127.0.0.1:9", "example.invalid")
IMAGE = "![x](http://127.0.0.1:9/x.png)"
LINK = "[click](http://example.invalid)"
BARE = "http://example.invalid/path"
WWW = "www.example.invalid"
PAGES = sorted(p.stem for p in (ROOT / "pages").glob("*.py"))


def live_payload(text: str) -> bool:
    """Whether rendered markdown ``text`` would still make a link or image of a payload."""
    if not any(host in text for host in HOSTS):
        return False
    return bool(re.search(r"(?<!\\)!(?<!\\)\[|(?<!\\)\]\(|(?i:https?|www)\\?[:.]|"
                          r"@(?!\u2060)", text))


def markdown_texts(at: AppTest) -> list[str]:
    """Everything of the page that Streamlit renders as markdown: bodies and labels."""
    texts: list[str] = []
    for kind in ("markdown", "caption", "title", "header", "subheader", "success", "info",
                 "warning", "error", "exception", "latex"):
        texts += [str(e.value) for e in at.get(kind)]
    for kind in ("expander", "tab", "button", "checkbox", "toggle", "radio", "metric",
                 "download_button", "form_submit_button", "status"):
        for element in at.get(kind):
            texts.append(str(getattr(element, "label", "") or ""))
            if kind == "radio":
                texts += [str(o) for o in element.options]
    for element in at.get("radio"):
        texts += [str(o) for o in element.options]
    return texts


@pytest.fixture()
def poisoned(settings, tmp_path):
    """Classes, a dataset, a finished import job and a user named with payloads."""
    from sqlalchemy import update

    from core.db.engine import run_write
    from core.db.models import ImageClass
    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    folder = make_imagefolder(tmp_path / "fruit", ["apple", "lime"], 2, size=(24, 24))
    submit_import(str(folder), dataset=f"{IMAGE} {WWW}", user=BARE, settings=settings)
    assert run_worker(settings, once=True) == 0
    run_write(lambda s: s.execute(update(ImageClass).where(ImageClass.name == "apple")
                                  .values(display_name=f"{IMAGE} {LINK}")), settings)
    run_write(lambda s: s.execute(update(ImageClass).where(ImageClass.name == "lime")
                                  .values(display_name=BARE)), settings)
    return settings


@pytest.mark.parametrize("page", PAGES)
def test_no_page_renders_user_text_as_markdown(poisoned, page):
    at = AppTest.from_file(str(ROOT / "pages" / f"{page}.py"), default_timeout=60).run()
    assert not at.exception, at.exception
    seen = markdown_texts(at)
    live = [t for t in seen if live_payload(t)]
    assert not live, f"{page}: user text rendered as markdown: {live}"


def test_the_check_sees_live_and_inert_payloads():
    from webui import escape_markdown

    for payload in (IMAGE, LINK, BARE, WWW, f"{IMAGE} {WWW}"):
        assert live_payload(f"**{payload}**")
        assert not live_payload(f"**{escape_markdown(payload)}**")


def _assert_inert(at: AppTest, where: str) -> None:
    assert not at.exception, at.exception
    live = [t for t in markdown_texts(at) if live_payload(t)]
    assert not live, f"{where}: user text rendered as markdown: {live}"


def test_gallery_detail_and_quiz_reveal_show_names_as_text(poisoned):
    from sqlalchemy import update

    from core.db.engine import run_write
    from core.db.models import Dataset
    from tests.test_quiz_helpers import add_pool

    at = AppTest.from_file(str(ROOT / "pages" / "gallery.py"), default_timeout=60).run()
    next(b for b in at.button if b.label.startswith("#")).click().run()
    assert at.subheader, "the image detail did not open"
    _assert_inert(at, "gallery detail")

    # The quiz reveal names the real image's dataset and the generating model.
    add_pool(poisoned, classes=("apple",), real_per_class=2, synthetic={BARE: 2})
    run_write(lambda s: s.execute(update(Dataset).where(Dataset.name == "photos")
                                  .values(name=f"{LINK} photos")), poisoned)
    at = AppTest.from_file(str(ROOT / "pages" / "quiz.py"), default_timeout=60)
    at.session_state["user_name"] = "alice"
    at.run()
    at.button(key="quiz_deal").click().run()
    _assert_inert(at, "quiz round")
    at.button(key="quiz_pick_0").click().run()
    assert any("Real" in m.value for m in at.markdown), "no reveal"
    _assert_inert(at, "quiz reveal")
