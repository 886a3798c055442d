"""Server-side render time of every page in ``app.py``'s menu, at 100,000 images and 50 runs.

    python bench/pages.py                                  # build a data dir, measure, delete it
    python bench/pages.py --data /tmp/pages-bench --keep   # build it there and keep it
    python bench/pages.py --data /tmp/pages-bench --reuse  # measure on the kept one again
    python bench/pages.py --images 5000 --runs 4           # a quick look

The data dir: a small real imported dataset (10 classes, tiny JPEGs) on which two real
training runs are trained (the real trainer, 1 epoch at 16 px), then copied to ``--runs``
rows with their run images (sweep groups of 5, so Results has groups to pick); then
``--images`` index rows bulk-inserted through the project's models in three datasets (real
with train/test splits, real without, synthetic with prompts and two models). Every row's
path is one of the imported files (rows share the few files on disk, each with its own
sha256), so the DB never points at a missing file, and the quiz, gallery thumbnails and
detail views really open images.

Measured with ``streamlit.testing.v1.AppTest`` through ``app.py`` (its navigation, boot,
sidebar), as the server runs it:
* **cold**: the first time each page runs in this process (imports, caches empty);
* **first**: a new session (a new tab) opening the page on the now warm server;
* **click**: a rerun of that session (what every widget click costs);
* **expired**: a new session after the page caches were emptied (``st.cache_data.clear()``):
  a visitor who comes after ``page_cache_seconds`` or after a write, on a warm server.
Medians over ``--repeats`` new sessions. Plus, in a fresh interpreter each, the import time
of ``app.py``'s helpers with the Home page's modules, and the sign-in form and sign-in
(auth mode ``password``) on a warm server. The load average is printed: the machine is
shared, read the numbers with it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

CLASSES = ["apple", "banana", "lime", "plum", "orange"]  # tests/imagemaker.py draws these
MODELS = ["stabilityai/sd-turbo", "segmind/tiny-sd"]
MARKER = "bench-pages.json"
BENCH_USER, BENCH_PASSWORD = "benchuser", "bench-password-123"


# --- the data dir -------------------------------------------------------------------------

def _import_small_set(settings, work: Path) -> None:  # noqa: ANN001
    from core.ingest import ImportOptions, import_dataset
    from imagemaker import make_imagefolder

    folder = make_imagefolder(work / "orchard", CLASSES, 6, size=(32, 24))
    import_dataset(folder, settings, ImportOptions(dataset="orchard", added_by="bench"))
    synthetic = make_imagefolder(work / "generated", CLASSES, 3, seed=7, size=(32, 32))
    import_dataset(synthetic, settings, ImportOptions(dataset="generated-small",
                                                       source="synthetic", added_by="bench"))


def _train_runs(settings, runs: int) -> None:  # noqa: ANN001
    """Two real runs, then copies of them (rows and run images) up to ``runs``."""
    import copy
    import uuid

    import torch
    from sqlalchemy import insert, select

    from core.db.engine import session_scope
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs, execute_run
    from core.training.models import Run, RunImage
    from core.training.trainer import TrainConfig

    torch.set_num_threads(1)
    request = ExperimentRequest(data=DataSpec(classes=CLASSES[:3]),
                                train=TrainConfig(epochs=1, image_size=16, batch_size=8),
                                repeats=2, name="bench")
    trained = create_runs(request, created_by="bench", settings=settings)
    for run_id in trained:
        execute_run(run_id, settings)
    columns = [c.key for c in Run.__table__.columns if c.key != "id"]
    with session_scope(settings, write=True) as session:
        originals = list(session.scalars(select(Run).where(Run.id.in_(trained))))
        images = {run_id: [{"role": r.role, "label": r.label, "image_id": r.image_id}
                           for r in session.scalars(select(RunImage).where(RunImage.run_id == run_id))]
                  for run_id in trained}
        group = None
        for index in range(runs - len(trained)):
            source = originals[index % len(originals)]
            if index % 5 == 0:
                group = uuid.uuid4().hex
            row = {key: copy.deepcopy(getattr(source, key)) for key in columns}
            row.update(name=f"bench copy {index}", group_id=group, group_kind="repeat", job_id=None)
            clone = Run(**row)
            session.add(clone)
            session.flush()
            session.execute(insert(RunImage), [{**r, "run_id": clone.id}
                                               for r in images[source.id]])


def _bulk_images(settings, rows: int) -> None:  # noqa: ANN001
    from sqlalchemy import insert, select

    from core.db.engine import session_scope
    from core.db.models import Dataset, Image, ImageClass, utcnow

    with session_scope(settings) as session:
        files = {name: list(session.execute(
            select(Image.path, Image.width, Image.height, Image.format).join(ImageClass)
            .where(ImageClass.name == name))) for name in CLASSES}
        class_ids = {n: i for n, i in session.execute(select(ImageClass.name, ImageClass.id))}
    with session_scope(settings, write=True) as session:
        session.execute(insert(Dataset), [
            {"name": "photos", "source": "real", "created_at": utcnow()},
            {"name": "kaggle", "source": "real", "created_at": utcnow()},
            {"name": "sd-turbo-1", "source": "synthetic", "created_at": utcnow()}])
        ids = {n: i for n, i in session.execute(select(Dataset.name, Dataset.id))}
    now = utcnow()
    batch = []
    with session_scope(settings, write=True) as session:
        for i in range(rows):
            dataset = ("photos", "kaggle", "sd-turbo-1")[i % 3]
            synthetic = dataset == "sd-turbo-1"
            name = CLASSES[(i // 3) % len(CLASSES)]
            path, width, height, fmt = files[name][i % len(files[name])]
            batch.append({
                "sha256": f"{i:064x}", "path": path, "class_id": class_ids[name],
                "source": "synthetic" if synthetic else "real", "dataset_id": ids[dataset],
                "split": ("train" if i % 5 else "test") if dataset == "photos" else None,
                "width": width, "height": height, "format": fmt, "added_at": now,
                "added_by": "bench", "excluded": i % 97 == 0,
                "model": MODELS[(i // 30) % 2] if synthetic else None,
                "prompt": f"a photo of a {'ripe' if i % 2 else 'green'} {name}, seed {i}"
                if synthetic else None})
            if len(batch) == 10_000:
                session.execute(insert(Image), batch)
                batch = []
        if batch:
            session.execute(insert(Image), batch)


def build(settings, work: Path, images: int, runs: int) -> None:  # noqa: ANN001
    from core.db.engine import init_db
    from core.users.accounts import add_user

    init_db(settings)
    _import_small_set(settings, work / "sources")
    _train_runs(settings, runs)
    _bulk_images(settings, images)
    add_user(BENCH_USER, BENCH_PASSWORD, is_admin=True, settings=settings)
    (Path(settings.home_path) / MARKER).write_text(json.dumps({"images": images, "runs": runs}))


# --- measuring -----------------------------------------------------------------------------

_SHARED: dict = {}


def _server_like() -> None:
    """Make AppTest do once per process what a server does once, not per session or run.

    AppTest scans every installed package for Streamlit components in each new session
    (about a second on a busy machine, as much as a page) and compiles the page script
    afresh on every run (0.1 s); a server does the first at start and keeps one script
    cache. Both varied with the load by more than the pages' own time, so they are shared
    here: the figures are the pages' own work plus Streamlit's per-run cost."""
    from streamlit.components.v2.component_manager import BidiComponentManager
    from streamlit.runtime.scriptrunner.script_cache import ScriptCache
    from streamlit.testing.v1 import app_test

    if _SHARED:
        return
    manager = BidiComponentManager()
    manager.discover_and_register_components(start_file_watching=False)
    _SHARED["components"] = manager
    cache = ScriptCache()
    app_test.ScriptCache = lambda: cache  # AppTest makes one per run; a server keeps one


def _new_app(path: Path):  # noqa: ANN202 - an AppTest
    from streamlit.testing.v1 import AppTest

    app = AppTest.from_file(str(path), default_timeout=300)
    if "components" in _SHARED:
        app._bidi_component_manager = _SHARED["components"]
    return app


def _app(page: str | None = None):  # noqa: ANN202 - an AppTest
    app = _new_app(ROOT / "app.py")
    if page is not None:
        app.switch_page(page)
    return app


def _timed_run(app) -> float:  # noqa: ANN001
    start = time.perf_counter()
    app.run()
    elapsed = time.perf_counter() - start
    if app.exception:
        raise RuntimeError(f"page failed: {app.exception[0].value}")
    return elapsed


def measure_pages(pages: list[tuple[str, str]],
                  repeats: int) -> list[tuple[str, float, float, float, float]]:
    import logging

    import streamlit as st

    # clear() outside a session says it found no runtime, each time; it clears all the same.
    logging.getLogger("streamlit.runtime.caching.cache_data_api").addFilter(
        lambda record: "No runtime found" not in record.getMessage())
    rows = []
    cold = {}
    for path, title in pages:  # cold: the first run of each page in this process
        cold[path] = _timed_run(_app(path))
    for path, title in pages:
        firsts, clicks, expired = [], [], []
        for _ in range(repeats):
            app = _app(path)
            firsts.append(_timed_run(app))
            clicks.append(_timed_run(app))
            st.cache_data.clear()
            expired.append(_timed_run(_app(path)))
        rows.append((title, cold[path], statistics.median(firsts), statistics.median(clicks),
                     statistics.median(expired)))
    return rows


def measure_baseline(repeats: int) -> tuple[float, float]:
    """AppTest's own cost: a page that writes one line, in a new session and on a rerun
    (each page's "first" and "click" are printed with this subtracted too)."""

    script = ROOT / "bench" / ".pages_baseline.py"
    script.write_text("import streamlit as st\n\nst.write('baseline')\n")
    try:
        firsts, clicks = [], []
        for _ in range(repeats + 1):  # the first one warms up
            app = _new_app(script)
            firsts.append(_timed_run(app))
            clicks.append(_timed_run(app))
        return statistics.median(firsts[1:]), statistics.median(clicks[1:])
    finally:
        script.unlink()


def measure_sign_in(repeats: int) -> tuple[float, float]:
    """The sign-in form (a new visitor) and the sign-in itself, auth mode ``password``."""
    os.environ["SYNTHLAB_AUTH_MODE"] = "password"
    try:
        forms, sign_ins = [], []
        for _ in range(repeats):
            # The Home page file itself (the same boot() gate app.py runs): AppTest does not
            # carry a form's submit through app.py's hidden navigation.
            app = _new_app(ROOT / "pages" / "home.py")
            forms.append(_timed_run(app))
            app.text_input(key="_sign_in_name").input(BENCH_USER)
            app.text_input(key="_sign_in_password").input(BENCH_PASSWORD)
            start = time.perf_counter()
            app.button[0].click().run()
            sign_ins.append(time.perf_counter() - start)
            if app.exception or [t.value for t in app.title] != ["SynthLab"]:
                raise RuntimeError("sign-in did not land on the Home page")
        return statistics.median(forms), statistics.median(sign_ins)
    finally:
        os.environ.pop("SYNTHLAB_AUTH_MODE")


COLD_SCRIPT = """
import os, sys, time
os.environ["STREAMLIT_LOGGER_LEVEL"] = "error"
from streamlit.testing.v1 import AppTest
root, what = sys.argv[1], sys.argv[2]
if what == "sign-in":
    app = AppTest.from_file(root + "/pages/home.py", default_timeout=300)
    start = time.perf_counter(); app.run(); form = time.perf_counter() - start
    time.sleep(5)  # typing the name and password
    app.text_input(key="_sign_in_name").input(sys.argv[3])
    app.text_input(key="_sign_in_password").input(sys.argv[4])
    start = time.perf_counter(); app.button[0].click().run(); done = time.perf_counter() - start
    assert [t.value for t in app.title] == ["SynthLab"], "sign-in did not land on Home"
    print(form, done)
else:
    app = AppTest.from_file(root + "/app.py", default_timeout=300)
    app.switch_page(what)
    start = time.perf_counter(); app.run(); print(time.perf_counter() - start)
    assert not app.exception
"""


def cold_start(what: str) -> list[float]:
    """A fresh server process: its first page (``what``: a page file), or its sign-in form
    and, 5 s of typing later, signing in (auth mode ``password``)."""
    env = dict(os.environ)
    if what == "sign-in":
        env["SYNTHLAB_AUTH_MODE"] = "password"
    out = subprocess.run([sys.executable, "-c", COLD_SCRIPT, str(ROOT), what, BENCH_USER,
                          BENCH_PASSWORD], cwd=ROOT, env=env, capture_output=True, text=True)
    if out.returncode:
        raise RuntimeError(out.stderr[-2000:])
    return [float(x) for x in out.stdout.split()]


HEAVY = ("torch", "sklearn", "plotly.express", "plotly.graph_objects", "diffusers",
         "transformers", "captum", "datasets", "pandas")


def import_time() -> tuple[float, list[str]]:
    """A fresh interpreter importing app.py's helpers and the Home page's modules."""
    code = ("import sys, time; t = time.perf_counter(); import webui, webui.jobs, core.gallery; "
            "print(time.perf_counter() - t); "
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         check=True).stdout.split("\n")
    return float(out[0]), [m for m in out[1].split(",") if m]


def menu() -> list[tuple[str, str]]:
    """``(file, title)`` of every page in app.py's navigation, read from its PAGES list."""
    import ast

    tree = ast.parse((ROOT / "app.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", None) == "PAGES":
            return [(path, title) for path, title, _icon in ast.literal_eval(node.value)
                    if (ROOT / path).is_file()]
    raise RuntimeError("app.py has no PAGES list")


def main() -> None:
    # Quiet AppTest's "missing ScriptRunContext" warning, printed on every page run.
    os.environ.setdefault("STREAMLIT_LOGGER_LEVEL", "error")
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=5, help="new sessions per page")
    parser.add_argument("--data", type=Path, help="the data dir (default: a temporary one)")
    parser.add_argument("--reuse", action="store_true", help="measure on --data as built before")
    parser.add_argument("--keep", action="store_true", help="keep the data dir afterwards")
    parser.add_argument("--pages", help="comma-separated page titles (default: every page)")
    args = parser.parse_args()

    work = args.data or Path(tempfile.mkdtemp(prefix="synthlab-bench-pages-"))
    work = work.resolve()
    os.environ["SYNTHLAB_HOME"] = str(work / "home")
    os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
    try:
        marker = work / "home" / MARKER
        if args.reuse:
            if not marker.is_file():
                sys.exit(f"{work} holds no data dir built by this bench; run without --reuse")
            built = json.loads(marker.read_text())
            print(f"reusing {work}: {built['images']:,} images, {built['runs']} runs")
        else:
            if marker.exists():
                sys.exit(f"{work} already holds a bench data dir: pass --reuse, or another --data")
            from core.config import get_settings

            start = time.perf_counter()
            build(get_settings(), work, args.images, args.runs)
            print(f"built {work}: {args.images:,} images, {args.runs} runs "
                  f"in {time.perf_counter() - start:.0f} s")

        seconds, heavy = import_time()
        print(f"import webui + webui.jobs + core.gallery (fresh interpreter): {seconds:.2f} s; "
              f"heavy modules loaded: {', '.join(heavy) or 'none'}")
        cold_gallery = cold_start("pages/gallery.py")[0]
        cold_form, cold_sign_in = cold_start("sign-in")
        print(f"fresh server process: first page (Gallery) {cold_gallery:.2f} s; sign-in form "
              f"{cold_form:.2f} s, then signing in (5 s of typing later) {cold_sign_in:.2f} s")
        pages = menu()
        if args.pages:
            wanted = {t.strip().lower() for t in args.pages.split(",")}
            pages = [(path, title) for path, title in pages if title.lower() in wanted]
        _server_like()
        rows = measure_pages(pages, args.repeats)
        form, sign_in = measure_sign_in(args.repeats)
        base_first, base_click = measure_baseline(args.repeats)
        print(f"\nserver-side render time, medians of {args.repeats} new sessions per page "
              f"(load average {' '.join(f'{x:.2f}' for x in os.getloadavg())})")
        print(f"AppTest's own cost (a one-line page): first {base_first:.2f} s, "
              f"click {base_click:.2f} s; 'net' columns subtract it")
        print(f"{'page':<14}{'cold':>8}{'first':>8}{'net':>8}{'click':>8}{'net':>8}"
              f"{'expired':>9}{'net':>8}")
        for title, cold, first, click, expired in rows:
            net_first, net_click = first - base_first, click - base_click
            net_expired = expired - base_first
            flag = ("" if max(net_first, net_expired) < 1.5 and net_click < 0.5
                    else "   over goal")
            print(f"{title:<14}{cold:>7.2f}s{first:>7.2f}s{net_first:>7.2f}s{click:>7.2f}s"
                  f"{net_click:>7.2f}s{expired:>8.2f}s{net_expired:>7.2f}s{flag}")
        print(f"{'sign-in form':<14}{'':>8}{form:>7.2f}s{form - base_first:>7.2f}s")
        print(f"{'signing in':<14}{'':>8}{'':>8}{'':>8}{sign_in:>7.2f}s{sign_in - base_click:>7.2f}s")
        print("goal: first < 1.5 s, click < 0.5 s (net, on a warm server)")
    finally:
        if not args.keep and not args.reuse and args.data is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
