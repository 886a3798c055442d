"""Playing the quiz in Chromium with 20,000 images in the pool: how long answering and the
next round take, from the key press to what the player sees.

    python bench/quiz_browser.py                    # 20,000 image rows, 15 rounds
    python bench/quiz_browser.py --rows 20000 --rounds 25 --mode quad

Measured, per round, with the keyboard as a player does it:
* **answer**: key 1 pressed -> the reveal (the "Right!/Fooled" alert) is on screen;
* **next**: Enter pressed -> every image of the new round is loaded and decoded.

The pool is 20,000 rows in the index (10 classes, real and synthetic, two models); their
files are 400 real pictures (smooth 640x480 JPEG photos) and synthetic ones (512x512 PNG),
shared by the rows, so every served image is really decoded, cropped, resized and encoded.
The baseline, measured in the same run on the same machine, is ``bench/quiz_baseline_app.py``:
Streamlit doing the same visible steps (an alert; two new 256 px images) with no quiz
work at all. Medians, 90th percentiles, the ratio to the baseline, and the load average
(2-core machine shared with other test runs: read the numbers with it).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

FILES_PER_SOURCE = 200
IMAGES = "[data-testid='stImage'] img"


def _photo(seed: int) -> bytes:
    import numpy as np
    from PIL import Image, ImageFilter

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:480, 0:640] / 640
    pixels = rng.uniform(40, 200, 3) + xx[..., None] * rng.uniform(-90, 90, 3) \
        + yy[..., None] * rng.uniform(-90, 90, 3)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB")
    buffer = io.BytesIO()
    image.filter(ImageFilter.GaussianBlur(3)).save(buffer, format="JPEG", quality=90)
    return buffer.getvalue()


def _generation(seed: int) -> bytes:
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(100_000 + seed)
    pixels = rng.normal(rng.uniform(60, 190, 3), 40, size=(512, 512, 3))
    buffer = io.BytesIO()
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8), "RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def populate(settings, rows: int) -> None:  # noqa: ANN001
    """``rows`` index rows (bench/quiz_deal.py's pool) over 2 x FILES_PER_SOURCE real files
    on disk: the browser shows them, so they must exist."""
    from core.store import ImageStore
    from quiz_deal import populate as populate_rows

    store = ImageStore(settings)
    files = {}
    for source, make, ext in (("real", _photo, ".jpg"), ("synthetic", _generation, ".png")):
        for index in range(FILES_PER_SOURCE):
            relpath = f"bench/{source}-{index}{ext}"
            path = store.abspath(relpath)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(make(index))
            files[(source, index)] = relpath

    def file_of(index: int, synthetic: bool) -> tuple[str, int, int, str]:
        source = "synthetic" if synthetic else "real"
        path = files[(source, (index // 2) % FILES_PER_SOURCE)]
        return (path, 512, 512, "PNG") if synthetic else (path, 640, 480, "JPEG")

    populate_rows(settings, rows, file_of)


def _idle(page) -> None:  # noqa: ANN001
    from tests.browser import wait_for_app

    wait_for_app(page)


def _images_loaded(page, count: int, old: list[str]) -> None:  # noqa: ANN001
    page.wait_for_function(
        """([selector, count, old]) => {
            const images = Array.from(document.querySelectorAll(selector));
            return images.length === count && images.every(
                i => i.complete && i.naturalWidth > 0 && !old.includes(i.src));
        }""", arg=[IMAGES, count, old], timeout=60_000, polling="raf")


def _sources(page) -> list[str]:  # noqa: ANN001
    return page.eval_on_selector_all(IMAGES, "els => els.map(e => e.src)")


def play(page, url: str, rounds: int, count: int, *, quiz: bool) -> tuple[list[float], list[float]]:  # noqa: ANN001
    """(answer seconds, next-round seconds) per round, keyboard only."""
    page.goto(url)
    _idle(page)
    if quiz:
        name = page.get_by_label("Your name", exact=True)
        name.fill("bench")
        name.press("Enter")
        _idle(page)
        if count == 4:
            page.get_by_text("Round settings").first.click()
            page.get_by_text("Which is real? (4 images)").first.click()
            _idle(page)
        page.evaluate("document.activeElement && document.activeElement.blur()")
        page.keyboard.press("Enter")  # deal the first round
    _images_loaded(page, count, [])
    _idle(page)
    answers, nexts = [], []
    for index in range(rounds + 2):  # the first two warm up (imports, caches)
        old = _sources(page)
        start = time.perf_counter()
        page.keyboard.press("1")
        page.wait_for_selector("[data-testid='stAlert']", state="visible", timeout=60_000)
        answered = time.perf_counter() - start
        _idle(page)
        start = time.perf_counter()
        page.keyboard.press("Enter")
        _images_loaded(page, count, old)
        following = time.perf_counter() - start
        _idle(page)
        if index >= 2:
            answers.append(answered)
            nexts.append(following)
    return answers, nexts


def _summary(label: str, values: list[float]) -> str:
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, int(round(0.9 * (len(ordered) - 1))))]
    return (f"{label:<32} median {statistics.median(values) * 1000:7.0f} ms   "
            f"p90 {p90 * 1000:7.0f} ms   max {max(values) * 1000:7.0f} ms")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--mode", choices=["pair", "quad"], default="pair")
    args = parser.parse_args()

    from tests.browser import launch_browser, start_server

    work = Path(tempfile.mkdtemp(prefix="synthlab-bench-quiz-browser-"))
    count = 2 if args.mode == "pair" else 4
    servers = []
    try:
        os.environ["SYNTHLAB_HOME"] = str(work / "quiz-home")
        os.environ["SYNTHLAB_AUTOSTART_WORKER"] = "0"
        from core.config import get_settings
        from core.db.engine import init_db

        settings = get_settings()
        init_db(settings)
        start = time.perf_counter()
        populate(settings, args.rows)
        print(f"pool: {args.rows:,} index rows over {2 * FILES_PER_SOURCE} files "
              f"(made in {time.perf_counter() - start:.1f} s); mode {args.mode}, "
              f"{args.rounds} measured rounds each")
        load_before = os.getloadavg()
        baseline = start_server(work / "baseline-home", app=str(ROOT / "bench" / "quiz_baseline_app.py"))
        servers.append(baseline)
        quiz = start_server(work / "quiz-home")
        servers.append(quiz)
        with launch_browser() as page:
            base_answer, base_next = play(page, baseline.url, args.rounds, 2, quiz=False)
            quiz_answer, quiz_next = play(page, quiz.url + "/quiz", args.rounds, count, quiz=True)
        load_after = os.getloadavg()
        print(_summary("baseline: answer (alert)", base_answer))
        print(_summary("baseline: next (2 new images)", base_next))
        print(_summary("quiz: answer -> reveal", quiz_answer))
        print(_summary(f"quiz: next round ({count} images)", quiz_next))
        print(f"ratio quiz / baseline (medians)  answer {statistics.median(quiz_answer) / statistics.median(base_answer):5.2f}x"
              f"   next {statistics.median(quiz_next) / statistics.median(base_next):5.2f}x")
        worst = max(statistics.median(quiz_answer), statistics.median(quiz_next))
        print(f"under 1 s (median): {'yes' if worst < 1 else 'NO'}")
        print(f"load average (1, 5, 15 min): before {load_before[0]:.2f} {load_before[1]:.2f} "
              f"{load_before[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}; "
              f"{os.cpu_count()} CPUs")
    finally:
        for server in servers:
            server.stop(grace_s=3)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
