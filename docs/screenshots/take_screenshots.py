"""Re-take the README's screenshots in a real browser (Debian Chromium through Playwright).

    python docs/screenshots/take_screenshots.py

Starts the dashboard on a throw-away data folder, imports a small generated fruit set
(real) and a few images tagged synthetic, imports one more folder through the Import
page, and saves home.png, import.png, gallery.png and gallery-detail.png here. Then it
builds the tiny random-weight test diffusion model (tests/tiny_sd.py) into the data
folder's models/, generates a few images with it through the Generate page, trains a
short run through the Train page and saves generate.png, preprocess.png, train.png,
results.png, explain.png, quiz.png and admin.png. The tiny model's images are noise:
the pictures show the pages, not image quality. Takes a few minutes on a 2-core CPU.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import launch_browser, start_server, wait_for_app  # noqa: E402
from tests.imagemaker import make_imagefolder  # noqa: E402


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


def images_loaded(page) -> None:  # noqa: ANN001 - playwright Page
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\\'stImage\\'] img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    page.wait_for_timeout(500)


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


def main() -> None:
    work = work_folder()
    home = work / "data"
    real = make_imagefolder(work / "fruit-photos", ["apple", "banana", "lime", "plum"], 10, size=(128, 96))
    synthetic = make_imagefolder(work / "sd-turbo-batch", ["apple", "banana", "lime"], 4, seed=9,
                                 size=(128, 128))
    orchard = make_imagefolder(work / "orchard", ["apple", "plum"], 5, seed=4, size=(128, 96))
    (orchard / "plum" / "broken.jpg").write_bytes(b"not really a jpeg")
    env = {"SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTOSTART_WORKER": "0"}
    from tests.tiny_sd import build_tiny_sd

    build_tiny_sd(home / "models" / "tiny-sd")  # listed by the Generate page as a local model
    for args in ([str(real), "--dataset", "fruit-photos"],
                 [str(synthetic), "--dataset", "sd-turbo-batch", "--source", "synthetic"]):
        subprocess.run([sys.executable, "-m", "core", "ingest", *args], cwd=ROOT, check=True,
                       env={**os.environ, **env}, capture_output=True)
    server = start_server(home, env={"SYNTHLAB_IMAGE_SIZE": "64"})
    try:
        with launch_browser((1400, 1100)) as page:
            page.goto(server.url)
            wait_for_app(page)
            name = page.get_by_label("Your name", exact=True)
            name.fill("erin")
            name.press("Enter")  # not in a form: Enter applies it
            wait_for_app(page)
            page.evaluate("document.activeElement && document.activeElement.blur()")  # no focus ring
            page.get_by_text("Images per class and source").wait_for()
            page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
            page.locator('[data-testid="stDataFrame"]').first.wait_for(timeout=60_000)
            page.wait_for_timeout(3000)
            page.screenshot(path=HERE / "home.png")

            page.get_by_role("link", name="Import").click()
            page.get_by_role("heading", name="Import a dataset").wait_for()
            wait_for_app(page)
            page.get_by_text("Folder or zip on the server").click()
            page.get_by_label("Server path (a folder or a .zip)").fill(str(orchard))
            page.get_by_label("Dataset name").fill("orchard")
            page.get_by_role("button", name="Import", exact=True).click()
            page.get_by_text("Dataset orchard (imagefolder layout)").wait_for(timeout=90_000)
            page.get_by_text("done").first.wait_for(timeout=30_000)
            page.mouse.wheel(0, 700)
            page.wait_for_timeout(1500)
            page.screenshot(path=HERE / "import.png")

            page.get_by_role("link", name="Gallery").click()
            page.get_by_role("heading", name="Gallery").wait_for()
            wait_for_app(page)
            page.locator('[data-testid="stImage"] img').nth(11).wait_for()
            images_loaded(page)
            page.screenshot(path=HERE / "gallery.png")
            page.get_by_role("button", name="#50", exact=True).click()
            page.get_by_text("Image #50").wait_for()
            wait_for_app(page)
            images_loaded(page)
            page.screenshot(path=HERE / "gallery-detail.png")
            problems = more_pages(page, server)
    finally:
        server.stop()
    for problem in problems:
        print("error-styled on the page (look at the picture):", problem)
    for name in ("home.png", "import.png", "gallery.png", "gallery-detail.png", *MORE_SHOTS):
        shrink(HERE / name)
        print(HERE / name, (HERE / name).stat().st_size // 1024, "KB")


MORE_SHOTS = ("generate.png", "preprocess.png", "train.png", "results.png", "explain.png",
              "quiz.png", "admin.png")


def more_pages(page, server) -> list[str]:  # noqa: ANN001 - playwright Page, LiveServer
    """Generate, train, and visit the other pages (steps as in tests/test_e2e_browser.py)."""
    from tests.test_e2e_browser import Flow, _submit, _wait_for_job

    problems: list[str] = []

    def shot(name: str) -> None:
        flow.idle()
        page.wait_for_function(
            "() => Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)",
            timeout=30_000)
        page.wait_for_timeout(1500)
        # Exceptions and st.error boxes (the quiz's "Fooled" verdict is one by design).
        errors = page.locator("[data-testid='stException'], [data-testid='stAlertContentError']")
        for index in range(errors.count()):
            problems.append(f"{name}: {errors.nth(index).inner_text()[:500]}")
        page.screenshot(path=HERE / f"{name}.png")

    settings = server.settings
    flow = Flow(page, server, HERE)
    page.set_viewport_size({"width": 1400, "height": 1500})

    flow.open("Generate")
    flow.see("Generate synthetic images")
    flow.choose("Model", "tiny-sd")
    flow.text("New classes (comma-separated)", "apple, banana, lime, plum")
    flow.number("Images per class", 4)
    flow.number("Steps", 2)
    flow.number("Size (px)", 64)
    flow.text("Dataset name", "tiny-sd-fruit")
    _submit(flow, "Queue job", settings, "generate")
    flow.see(re.compile(r"Queued job #\d+: 16 images"))
    _wait_for_job(settings, "generate", 300)
    flow.idle()
    page.wait_for_timeout(3000)
    shot("generate")

    flow.open("Preprocess")
    flow.see("Preprocess")
    shot("preprocess")

    flow.open("Train")
    page.get_by_text("mixed: all real images plus synthetic ones", exact=False).first.click()
    flow.number("Epochs", 3)
    flow.number("Batch size", 8)
    flow.number("Early-stopping patience (0 = off)", 0)
    flow.number("Image size", 32)
    _submit(flow, "Start training", settings, "train")
    flow.see(re.compile(r"Queued job \d+ with 1 run"))
    _wait_for_job(settings, "train", 400)
    page.wait_for_timeout(3000)
    shot("train")

    flow.open("Results")
    flow.see("Metrics")
    page.locator(".js-plotly-plot .main-svg").first.wait_for(timeout=60_000)
    shot("results")

    flow.open("Explain")
    flow.see("Predicted", timeout=180)
    shot("explain")

    flow.open("Quiz")
    flow.click("Deal a round")
    flow.see("This one is real")
    flow.click("This one is real")
    flow.see(re.compile(r"^(Right!|Fooled|Wrong)"))
    shot("quiz")

    flow.open("Admin")
    flow.see("Audit log")
    page.get_by_role("tab", name="Worker").click()
    flow.see("Restart worker")
    shot("admin")
    return problems


if __name__ == "__main__":
    main()
