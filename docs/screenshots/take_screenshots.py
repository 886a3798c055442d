"""Re-take the README's screenshots from a demo run, in a real browser (Debian Chromium
through Playwright).

    python docs/screenshots/take_screenshots.py

Does what a newcomer does on a fresh install: starts the dashboard (with its own worker)
on a throw-away data folder, opens the empty Home page and clicks **Build the demo**. The
dashboard's worker then draws and imports the demo's fruit pictures, builds the demo model
(a tiny random-weight diffusion pipeline: its "generated" images are noise) and runs the
demo's generation, training and attribution jobs; the script follows those jobs in the
database until every one has finished (no fixed waits) and stops with their errors if one
failed. Then it visits every page (Home, Import, Gallery grid, Gallery detail by a click on
a thumbnail, Generate, Preprocess, Train, Results, Explain, Quiz, Admin) and saves
home.png, import.png, gallery.png, gallery-detail.png, generate.png, preprocess.png,
train.png, results.png, explain.png, quiz.png and admin.png here, shrunk and quantized so
the files stay small. Error boxes found on a page are printed at the end.

The demo's sizes are the defaults (Settings.demo_images_per_class and friends); any
SYNTHLAB_DEMO_* variable set in this script's environment is passed on to the dashboard.
Takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import launch_browser, start_server, wait_for_app  # noqa: E402

SHOTS = ("home.png", "import.png", "gallery.png", "gallery-detail.png", "generate.png",
         "preprocess.png", "train.png", "results.png", "explain.png", "quiz.png", "admin.png")
DEMO_TIMEOUT_S = 1800  # the whole demo (build and its three jobs) on a busy 2-core machine


def shrink(path: Path, width: int = 1400, max_height: int = 2000) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        if image.width != width:
            image = image.resize((width, round(image.height * width / image.width)),
                                 Image.Resampling.LANCZOS)
        image = image.crop((0, 0, image.width, min(image.height, max_height, content_bottom(image) + 40)))
        image.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def content_bottom(image) -> int:  # noqa: ANN001 - PIL image
    """The last row that differs from the bottom row (the page's background, column by column)."""
    import numpy as np

    pixels = np.asarray(image.convert("L")).astype(int)
    busy = np.nonzero((np.abs(pixels - pixels[-1:, :]) > 8).any(axis=1))[0]
    return int(busy[-1]) if len(busy) else image.height


def work_folder() -> Path:
    """A throw-away folder with a plain name, since the sidebar shows the data folder's path.

    ``<tmp>/synthlab`` when free or left by an earlier run of this script (it carries a
    marker file); otherwise a fresh random temporary folder.
    """
    plain = Path(tempfile.gettempdir()) / "synthlab"
    marker = plain / ".synthlab-screenshots"
    if plain.exists() and marker.is_file():
        shutil.rmtree(plain)
    if not plain.exists():
        plain.mkdir()
        marker.touch()
        return plain
    return Path(tempfile.mkdtemp(prefix="synthlab-shots-"))


def wait_for_demo(settings, timeout_s: float = DEMO_TIMEOUT_S) -> None:  # noqa: ANN001 - Settings
    """Follow the demo's jobs in the database until the build and the jobs it queued ended.

    The build job queues the generation, training and attribution jobs as it goes, so the
    demo is finished only once the build is done and every demo job it left is final.
    """
    from core.demo import demo_job_ids
    from core.jobs import DONE, FINAL_STATUSES, get_job

    started = time.monotonic()
    last = None
    while True:
        jobs = demo_job_ids(settings)
        state = sorted((job_id, kind, status) for job_id, (kind, status) in jobs.items())
        if state != last:
            print(f"{time.monotonic() - started:6.0f} s  demo jobs:",
                  ", ".join(f"#{i} {k} {s}" for i, k, s in state), flush=True)
            last = state
        kinds = {kind for _, kind, _ in state}
        if ({"demo", "generate", "train", "explain"} <= kinds
                and all(status in FINAL_STATUSES for _, _, status in state)):
            failed = [(i, k, s) for i, k, s in state if s != DONE]
            if failed:
                details = [f"#{i} {k} {s}: {getattr(get_job(i, settings), 'error', '')}"
                           for i, k, s in failed]
                raise RuntimeError("demo jobs did not finish:\n" + "\n".join(details))
            return
        if time.monotonic() - started > timeout_s:
            raise TimeoutError(f"the demo did not finish in {timeout_s} s: {state}")
        time.sleep(1)


def main() -> None:
    work = work_folder()
    home = work / "data"
    # start_server hands the dashboard no SYNTHLAB_* variable of ours unless named here.
    demo_env = {k: v for k, v in os.environ.items() if k.startswith("SYNTHLAB_DEMO_")}
    server = start_server(home, env=demo_env)
    problems: list[str] = []
    try:
        with launch_browser((1400, 1100)) as page:
            take_all(page, server, problems)
    except Exception:
        print(server.log_tail(), file=sys.stderr)
        raise
    finally:
        server.stop()
    for problem in problems:
        print("error-styled on the page (look at the picture):", problem)
    for name in SHOTS:
        shrink(HERE / name)
        print(HERE / name, (HERE / name).stat().st_size // 1024, "KB")


def choose_by_typing(page, label: str, option: str) -> None:  # noqa: ANN001 - playwright Page
    """Pick ``option`` in a select box the way a keyboard user does: type it, press Enter."""
    box = page.get_by_role("combobox", name=label, exact=True)
    box.click()
    page.keyboard.type(option)
    page.keyboard.press("Enter")
    wait_for_app(page)


def take_all(page, server, problems: list[str]) -> None:  # noqa: ANN001 - Page, LiveServer
    from tests.test_e2e_browser import Flow

    flow = Flow(page, server, HERE)

    def shot(name: str, viewport_height: int = 1100) -> None:
        page.set_viewport_size({"width": 1400, "height": viewport_height})
        flow.idle()
        page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)")
        page.wait_for_timeout(1500)
        # Exceptions and st.error boxes (the quiz's "Fooled" verdict is one by design).
        errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
        for index in range(errors.count()):
            problems.append(f"{name}: {errors.nth(index).inner_text()[:500]}")
        page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
        page.screenshot(path=HERE / f"{name}.png")

    # Home, empty: a newcomer builds the demo with one click.
    page.goto(server.url)
    flow.idle()
    name = page.get_by_label("Your name", exact=True)
    name.fill("erin")
    name.press("Enter")  # not in a form: Enter applies it
    flow.idle()
    flow.click("Build the demo")
    flow.see("Demo queued as job")
    wait_for_demo(server.settings)

    page.reload()
    flow.idle()
    flow.see("Images per class and source")
    page.locator(".js-plotly-plot .main-svg").first.wait_for()
    page.locator('[data-testid="stDataFrame"]').first.wait_for()
    shot("home")

    flow.open("Import")
    page.get_by_role("heading", name="Import a dataset").wait_for()
    shot("import")

    flow.open("Gallery")
    page.get_by_role("heading", name="Gallery").wait_for()
    # By class: drawn pictures and generated noise side by side (newest first is all noise).
    page.set_viewport_size({"width": 1400, "height": 1400})  # the whole filter form in view
    choose_by_typing(page, "Sort", "by class")
    page.get_by_role("button", name="Apply", exact=True).click()
    flow.idle()
    thumbs = page.locator('[class*="st-key-g_cell_"] [data-testid="stImage"] img')
    thumbs.nth(11).wait_for()
    shot("gallery", 1400)
    # The picture itself is the click target (its own "open" button lies over it).
    box = thumbs.nth(0).bounding_box()
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.get_by_role("heading", name=re.compile(r"^Image #\d+:")).wait_for()
    page.get_by_text("Class:").first.wait_for()
    shot("gallery-detail", 1400)

    flow.open("Generate")
    flow.see("Generate synthetic images")
    shot("generate", 1500)

    flow.open("Preprocess")
    flow.see("Preprocess")
    shot("preprocess", 1500)

    flow.open("Train")
    shot("train", 1500)

    flow.open("Results")
    flow.see("Metrics")
    page.locator(".js-plotly-plot .main-svg").first.wait_for()
    shot("results", 1500)

    flow.open("Explain")
    flow.see("Predicted")
    choose_by_typing(page, "Source", "real")  # a drawn fruit rather than the newest image (noise)
    flow.see("Predicted")
    shot("explain", 1500)

    flow.open("Quiz")
    flow.click("Deal a round")
    flow.see("This one is real")
    flow.click("This one is real")
    flow.see(re.compile(r"^(Right!|Fooled|Wrong)"))
    shot("quiz", 1500)

    flow.open("Admin")
    flow.see("Audit log")
    page.get_by_role("tab", name="Worker").click()
    flow.see("Restart worker")
    shot("admin", 1500)


if __name__ == "__main__":
    main()
