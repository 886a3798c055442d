"""In Chromium, two daily-use checks of issue 15 on one server (started once: a server and
its data cost more than the checks).

1. "Your name" (no-sign-in mode) survives a reload, kept in a cookie; a name that tries to
   end the page script runs nothing and comes back whole.
2. Every plotly figure on Results, Explain and the quiz Analysis is readable at the width it
   is drawn. Measured in the DOM: a title is not under plotly's
toolbar (the modebar) and not cut off by the chart's edge; bars do not reach under the
toolbar; text labels are not covered by markers.

The data: the explain fixture's trained run (shared, built once per module) and quiz
answers whose fool rate is just under chance (5 of 11), which put the old "n=11" label
above the bar under the chance marker. The window is narrow (a laptop with the sidebar open), where titles are cut.
"""

from __future__ import annotations

import shutil

import pytest

from test_explain_fixtures import one_torch_thread, trained_template  # noqa: F401 - fixtures
from tests.browser import LiveServer, browser_page, start_server, wait_for_app  # noqa: F401

NAME = "Zoë </script><img src=x onerror=\"window.__pwned=1\"> 'O\"Brien"

# Boxes of every chart's parts, in page coordinates (getBoundingClientRect).
MEASURE = """() => {
  const box = e => { const r = e.getBoundingClientRect();
                     return {x0: r.left, y0: r.top, x1: r.right, y1: r.bottom}; };
  return [...document.querySelectorAll('.js-plotly-plot')].map(plot => ({
    svg: box(plot.querySelector('svg.main-svg')),
    title: [...plot.querySelectorAll('.g-gtitle text')].filter(t => t.textContent.trim())
             .map(t => ({box: box(t), text: t.textContent})),
    modebar: [...plot.querySelectorAll('.modebar-group')].map(box)
               .filter(b => b.x1 > b.x0 && b.y1 > b.y0),
    // The plot areas (their drag rectangles): a wrapped title must stay above them.
    areas: [...plot.querySelectorAll('.draglayer .nsewdrag')].map(box)
             .filter(b => b.x1 > b.x0 && b.y1 > b.y0),
    bars: [...plot.querySelectorAll('.barlayer .point path')].map(box)
            .filter(b => b.x1 - b.x0 > 1 && b.y1 - b.y0 > 1),
    labels: [...plot.querySelectorAll('.barlayer text, .scatterlayer .textpoint text')]
              .filter(t => t.textContent.trim()).map(t => ({box: box(t), text: t.textContent})),
    // A marker's box grown by half its stroke: a line marker's path alone has no height.
    markers: [...plot.querySelectorAll('.scatterlayer .points path.point')].map(p => {
               const b = box(p), w = (parseFloat(getComputedStyle(p).strokeWidth) || 0) / 2;
               return {x0: b.x0 - w, y0: b.y0 - w, x1: b.x1 + w, y1: b.y1 + w}; })
               .filter(b => b.x1 > b.x0 && b.y1 > b.y0),
  }));
}"""


def _overlap(a: dict, b: dict, slack: float = 1.0) -> bool:
    return (min(a["x1"], b["x1"]) - max(a["x0"], b["x0"]) > slack
            and min(a["y1"], b["y1"]) - max(a["y0"], b["y0"]) > slack)


def layout_problems(charts: list[dict], page: str) -> list[str]:
    problems = []
    for n, chart in enumerate(charts):
        where = f"{page} chart {n + 1}"
        svg = chart["svg"]
        for title in chart["title"]:
            box = title["box"]
            if box["x0"] < svg["x0"] - 1 or box["x1"] > svg["x1"] + 1:
                problems.append(f"{where}: title cut at the chart's edge: {title['text']!r}")
            if any(_overlap(box, bar) for bar in chart["modebar"]):
                problems.append(f"{where}: title under the toolbar: {title['text']!r}")
            if any(_overlap(box, area) for area in chart["areas"]):
                problems.append(f"{where}: title over the plot: {title['text']!r}")
        if any(_overlap(bar, tool) for bar in chart["bars"] for tool in chart["modebar"]):
            problems.append(f"{where}: a bar reaches under the toolbar")
        for label in chart["labels"]:
            if any(_overlap(label["box"], marker) for marker in chart["markers"]):
                problems.append(f"{where}: label {label['text']!r} covered by a marker")
    return problems


def _fool_just_under_chance(settings, player: str, rounds_to_play: int, fooled: int) -> None:
    """``rounds_to_play`` pair rounds, the first ``fooled`` answered with the synthetic
    image (the pair mode's chance rate is 50 %)."""
    from sqlalchemy import select

    from core.db.engine import session_scope
    from core.quiz.models import QuizRound
    from core.quiz.rounds import RoundRequest, answer_round, new_round

    for k in range(rounds_to_play):
        view = new_round(player, RoundRequest(mode="pair", seed=k), settings)
        with session_scope(settings) as session:
            rnd = session.scalar(select(QuizRound).where(QuizRound.token == view.token))
            real = next(i.position for i in rnd.images if i.is_real)
            fake = next(i.position for i in rnd.images if not i.is_real)
        answer_round(player, view.token, position=fake if k < fooled else real, settings=settings)


def _open(page, name: str, ready: str) -> None:  # noqa: ANN001 - playwright Page
    page.get_by_role("link", name=name, exact=True).click()
    page.get_by_text(ready).first.wait_for(timeout=90_000)
    wait_for_app(page)


def _measure(page, label: str, expected: int, output_dir) -> list[str]:  # noqa: ANN001
    page.wait_for_function(f"document.querySelectorAll('.js-plotly-plot .main-svg').length >= {expected}",
                           timeout=60_000)
    page.screenshot(path=output_dir / f"{label}.png", full_page=True)
    charts = page.evaluate(MEASURE)
    assert len(charts) >= expected and any(c["modebar"] for c in charts), f"{label}: nothing measured"
    return layout_problems(charts, label)


@pytest.fixture(scope="module")
def server(trained_template, tmp_path_factory):  # noqa: F811
    """A dashboard over a copy of the explain fixture's data (a trained run) plus quiz answers."""
    from core.config import Settings

    template, _info = trained_template
    home = tmp_path_factory.mktemp("daily-use") / "home"
    shutil.copytree(template, home)
    _fool_just_under_chance(Settings(home=str(home)), "ann", 11, 5)
    live = start_server(home, env={"SYNTHLAB_AUTOSTART_WORKER": "0"})
    try:
        yield live
    finally:
        live.stop(grace_s=3)


@pytest.mark.browser
def test_the_name_survives_a_reload_and_runs_no_script(server: LiveServer,  # noqa: F811
                                                       browser_page, output_dir):
    from core.users.name_cookie import COOKIE_NAME

    page = browser_page
    page.goto(server.url)
    wait_for_app(page)
    field = page.get_by_label("Your name", exact=True)
    field.fill(NAME)
    field.press("Enter")
    wait_for_app(page)
    page.wait_for_function(f"document.cookie.includes('{COOKIE_NAME}=')")
    page.reload()
    wait_for_app(page)
    field = page.get_by_label("Your name", exact=True)
    page.screenshot(path=output_dir / "after-reload.png")
    assert field.input_value() == NAME
    assert page.evaluate("window.__pwned") is None
    # Clearing the name forgets it: the next reload starts anonymous.
    field.fill("")
    field.press("Enter")
    wait_for_app(page)
    page.wait_for_function(f"!document.cookie.includes('{COOKIE_NAME}=')")
    page.reload()
    wait_for_app(page)
    assert page.get_by_label("Your name", exact=True).input_value() == ""
    assert "Traceback" not in server.log_tail()


@pytest.mark.browser
def test_figures_are_readable_at_their_width(server: LiveServer, browser_page,  # noqa: F811
                                             output_dir):
    page = browser_page
    page.set_viewport_size({"width": 1000, "height": 1200})
    page.goto(server.url)
    wait_for_app(page)
    problems = []
    _open(page, "Results", "Per run")
    problems += _measure(page, "results", 5, output_dir)
    _open(page, "Explain", "Top predictions")
    problems += _measure(page, "explain-saliency", 2, output_dir)  # the default method
    page.get_by_label("Method").click()  # the longest title: occlusion's parameters
    page.get_by_role("option", name="Occlusion").click()
    wait_for_app(page)
    page.get_by_text("occlusion_window").first.wait_for()
    problems += _measure(page, "explain", 2, output_dir)
    _open(page, "Quiz", "Play")
    page.get_by_role("tab", name="Analysis").click()
    page.get_by_text("How often a synthetic image passed as real").first.wait_for()
    wait_for_app(page)
    problems += _measure(page, "quiz-analysis", 3, output_dir)
    assert not problems, "\n".join(problems)
    assert "Traceback" not in server.log_tail()


@pytest.mark.browser
def test_rejected_files_are_listed_whole(server: LiveServer, browser_page,  # noqa: F811
                                         output_dir, tmp_path):
    """A rejected file's name is what the user must find on disk: a long one was cut at the
    table cell's edge (the reasons had been made whole; the names had not)."""
    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    folder = tmp_path / "drop" / "kiwi"
    folder.mkdir(parents=True)
    long_name = "holiday_photos_2024_" + "_".join(["kiwi_from_the_market"] * 4) + ".jpg"
    (folder / long_name).write_bytes(b"not a picture")
    submit_import(str(folder.parent), dataset="rejects only", settings=server.settings)
    run_worker(server.settings, once=True)

    page = browser_page
    page.goto(f"{server.url}/import_data")
    wait_for_app(page)
    table = page.locator('.st-key-import_rejected [data-testid="stTable"]')
    table.wait_for()
    table.screenshot(path=output_dir / "rejected-files.png")
    cut = page.evaluate("""() => [...document.querySelectorAll('[data-testid="stTable"] td')]
        .flatMap(td => [...td.querySelectorAll('*')].concat([td]))
        .filter(e => e.scrollWidth > e.clientWidth + 1).map(e => e.innerText)""")
    assert cut == [], cut
    assert page.get_by_text(f"kiwi/{long_name}").count() == 1


@pytest.mark.browser
def test_a_removed_model_leaves_the_menu_in_the_browser(server: LiveServer, browser_page,  # noqa: F811
                                                        output_dir):
    """Taking a user-added model off the list: the menu the user sees moves to the model the
    page goes on with (dropping the choice left the removed model shown in the browser,
    while the page had fallen back to another)."""
    from playwright.sync_api import expect

    from core.generation.registry import add_custom_model, custom_sources

    add_custom_model("lab/example-sd", added_by="ann", settings=server.settings)
    page = browser_page
    page.goto(f"{server.url}/generate")
    wait_for_app(page)
    menu = page.get_by_role("combobox", name="Model")
    menu.click()
    page.get_by_role("option", name="lab/example-sd").first.click()
    wait_for_app(page)
    expect(menu).to_have_value("lab/example-sd  (not downloaded)")
    page.get_by_role("button", name="Remove this model from the list").click()
    expect(page.get_by_text("Removed lab/example-sd from the model list").first).to_be_visible()
    wait_for_app(page)
    page.screenshot(path=output_dir / "model-removed.png")
    expect(menu).to_have_value("SD-Turbo  (not downloaded)")
    expect(page.get_by_text("SD-Turbo is not downloaded yet").first).to_be_visible()
    assert custom_sources(server.settings) == []
