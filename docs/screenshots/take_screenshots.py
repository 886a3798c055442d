"""Re-take the README's screenshots in a real browser (Debian Chromium through Playwright).

    python docs/screenshots/take_screenshots.py

Starts the dashboard on a throw-away data folder, imports a small generated fruit set
(real) and a few images tagged synthetic, imports one more folder through the Import
page, and saves home.png, import.png, gallery.png and gallery-detail.png here.
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent.parent
sys.path.insert(0, str(ROOT))

from tests.browser import launch_browser, start_server, wait_for_app  # noqa: E402
from tests.imagemaker import make_imagefolder  # noqa: E402


def shrink(path: Path, width: int = 1100) -> None:
    from PIL import Image

    with Image.open(path) as image:
        image = image.convert("RGB")
        image = image.resize((width, round(image.height * width / image.width)), Image.Resampling.LANCZOS)
        image.quantize(colors=192, method=Image.Quantize.MEDIANCUT).save(path, optimize=True)


def images_loaded(page) -> None:  # noqa: ANN001 - playwright Page
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\\'stImage\\'] img')]"
                           ".every(i => i.complete && i.naturalWidth > 0)", timeout=30_000)
    page.wait_for_timeout(500)


def main() -> None:
    work = Path(tempfile.mkdtemp(prefix="synthlab-shots-"))
    home = work / "home"
    real = make_imagefolder(work / "fruit-photos", ["apple", "banana", "lime", "plum"], 10, size=(128, 96))
    synthetic = make_imagefolder(work / "sd-turbo-batch", ["apple", "banana", "lime"], 4, seed=9,
                                 size=(128, 128))
    orchard = make_imagefolder(work / "orchard", ["apple", "plum"], 5, seed=4, size=(128, 96))
    (orchard / "plum" / "broken.jpg").write_bytes(b"not really a jpeg")
    env = {"SYNTHLAB_HOME": str(home), "SYNTHLAB_AUTOSTART_WORKER": "0"}
    for args in ([str(real), "--dataset", "fruit-photos"],
                 [str(synthetic), "--dataset", "sd-turbo-batch", "--source", "synthetic"]):
        subprocess.run([sys.executable, "-m", "core", "ingest", *args], cwd=ROOT, check=True,
                       env={**__import__("os").environ, **env}, capture_output=True)
    server = start_server(home)
    try:
        with launch_browser((1400, 1100)) as page:
            page.goto(server.url)
            wait_for_app(page)
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
    finally:
        server.stop()
    for name in ("home.png", "import.png", "gallery.png", "gallery-detail.png"):
        shrink(HERE / name)
        print(HERE / name, (HERE / name).stat().st_size // 1024, "KB")


if __name__ == "__main__":
    main()
