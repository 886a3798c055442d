"""What keeps the pages quick (issue 14): no heavy import on the way to Home, and Home's
totals read once per render and not again until the index changes."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from sqlalchemy import event
from streamlit.testing.v1 import AppTest

from tests.imagemaker import make_imagefolder

ROOT = Path(__file__).resolve().parent.parent
# Streamlit itself loads plotly.graph_objects; plotly.express (and pandas with it) is ours.
HEAVY = ("torch", "sklearn", "scipy", "plotly.express", "pandas", "diffusers", "transformers",
         "captum", "datasets")
# app.py's helpers, and every module the Home page (and the sign-in form) imports.
HOME_MODULES = ("webui", "webui.page", "webui.jobs", "webui.cached", "webui.uploads",
                "core.gallery", "core.jobs", "core.worker", "core.device", "core.db.changes",
                "core.generation.registry", "core.users.accounts", "core.users.sessions")


def test_home_and_sign_in_modules_import_no_heavy_library():
    code = (f"import importlib, sys\nfor name in {HOME_MODULES!r}: importlib.import_module(name)\n"
            f"print(' '.join(m for m in {HEAVY!r} if m in sys.modules))")
    loaded = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                            text=True, check=True).stdout.split()
    assert loaded == [], f"imported on the way to the Home page: {loaded}; import them where used"


def test_home_counts_the_index_once_and_again_only_after_a_change(settings, tmp_path, monkeypatch):
    from core.db.engine import get_engine
    from core.ingest import ImportOptions, import_dataset

    # The cache key also renews every page_cache_seconds (30 s slots of the clock); two
    # renders that straddle a slot boundary (likely on a loaded host, where a render takes
    # seconds) counted again with no change. Only the change marker is under test here.
    monkeypatch.setenv("SYNTHLAB_PAGE_CACHE_SECONDS", str(10**9))

    import_dataset(make_imagefolder(tmp_path / "fruit", ["apple", "lime"], 2, size=(24, 16)),
                   settings, ImportOptions(dataset="fruit"))
    grouped: list[str] = []

    def record(conn, cursor, statement, *args) -> None:  # noqa: ANN001
        if "GROUP BY classes.name" in statement:
            grouped.append(statement)

    engine = get_engine(settings, write=False)
    event.listen(engine, "before_cursor_execute", record)
    try:
        home = AppTest.from_file(str(ROOT / "pages" / "home.py"), default_timeout=60).run()
        assert not home.exception and home.metric[0].value == "4"
        assert len(grouped) == 1  # the chart's counts came with the totals, not a second query
        home.run()  # a click: nothing changed, nothing counted again
        assert len(grouped) == 1
        import_dataset(make_imagefolder(tmp_path / "more", ["plum"], 3, size=(24, 16)),
                       settings, ImportOptions(dataset="more"))
        home.run()
        assert not home.exception and home.metric[0].value == "7" and len(grouped) == 2
    finally:
        event.remove(engine, "before_cursor_execute", record)
