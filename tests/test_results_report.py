"""Honest comparisons and the report: comparability warnings, macro and weighted metrics
with n and intervals, small-test-set warnings, the original study beside the runs, the
Results page, the ``report`` command, and the report opening offline in Chromium.

Five tiny runs (1 epoch, 16 px, 30 real images) are trained once for the whole module:
two seeds of one setup under the original protocol, and three that each differ from it in
one way (the test split, the classes, the preprocessing).
"""

from __future__ import annotations

import io
import json
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest
import torch
from streamlit.testing.v1 import AppTest

from core.catalog import add_image, get_or_create_class, get_or_create_dataset
from core.cli import main as cli_main
from core.config import Settings, get_settings
from core.db.engine import dispose_engines, init_db, session_scope
from core.imageio import decode_image
from core.store import ImageStore
from core.training.comparison import (comparability_warnings, config_diff, group_title,
                                      original_comparison, protocol_label, run_pipelines,
                                      setup_table)
from core.training.data import DataSpec
from core.training.experiments import ExperimentRequest, create_runs, execute_run, list_runs
from core.training.figures import metrics_csv, metrics_table, small_test_warnings
from core.training.models import Run
from core.training.protocols import protocol_options
from core.training.report import ReportError, render_report, write_report
from core.training.trainer import TrainConfig
from imagemaker import fruit_image
from tests.browser import browser_page  # noqa: F401 - the fixture

PAGES = Path(__file__).resolve().parent.parent / "pages"
torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box

# The original study's classes; the test images have no orange look, so plum's stands in.
LOOKS = {"apple": "apple", "banana": "banana", "orange": "plum"}
# User text with markup in it: it must come out inert everywhere.
NAME = "fruit <b>study</b> & co"


def _add_real_images(settings: Settings, per_class: int) -> None:
    store = ImageStore(settings)
    with session_scope(settings, write=True) as session:
        dataset = get_or_create_dataset(session, "orchard", source="real")
        for c_index, label in enumerate(LOOKS):
            image_class = get_or_create_class(session, label)
            for i in range(per_class):
                buffer = io.BytesIO()
                fruit_image(LOOKS[label], 7_001 + c_index * 10_007 + i, (40, 32)).save(buffer, "PNG")
                raw = buffer.getvalue()
                add_image(session, store, decode_image(raw), image_class=image_class,
                          dataset=dataset, raw=raw)


def _original(name: str, repeats: int = 1, **data: object) -> ExperimentRequest:
    data_values, train_values = protocol_options(
        "original", {"mode": "real", **data}, {"epochs": 1, "image_size": 16, "batch_size": 8})
    return ExperimentRequest(data=DataSpec.from_dict(data_values),
                             train=TrainConfig.from_dict(train_values), repeats=repeats,
                             name=name, protocol="original")


@dataclass
class Lab:
    settings: Settings
    base: list[int]  # two seeds of one setup (a repeat group)
    split: int  # another test split
    classes: int  # two classes only
    black: int  # SynthLab's black letterbox instead of the original white one

    @property
    def group(self) -> str:
        return self.runs(self.base)[0].group_id

    def runs(self, ids: list[int]) -> list[Run]:
        return sorted(list_runs(ids=ids, settings=self.settings), key=lambda r: r.id)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory):  # noqa: ANN201 - yields a Lab
    patch = pytest.MonkeyPatch()
    patch.setenv("SYNTHLAB_HOME", str(tmp_path_factory.mktemp("results-report") / "home"))
    patch.setenv("SYNTHLAB_AUTOSTART_WORKER", "0")
    patch.delenv("SYNTHLAB_DB_URL", raising=False)
    dispose_engines()
    settings = get_settings()
    init_db(settings)
    try:
        _add_real_images(settings, per_class=10)
        split = create_runs(_original("other split", split_seed=1), settings=settings)[0]
        classes = create_runs(_original("two classes", classes=["apple", "banana"]),
                              settings=settings)[0]
        black = create_runs(_original("black box", real_pipeline="real"), settings=settings)[0]
        # Last, so the Results page opens on this group (it opens on the newest run's).
        base = create_runs(_original(NAME, repeats=2), settings=settings)
        for run_id in [split, classes, black, *base]:
            execute_run(run_id, settings)
        yield Lab(settings, base, split, classes, black)
    finally:
        dispose_engines()
        patch.undo()


def _run(run_id: int, *, metrics: dict | None = None, config: dict | None = None,
         classes: tuple[str, ...] = ("apple", "banana"), name: str = "demo seed 0",
         mode: str = "real", group: tuple[str | None, str | None] = (None, None),
         counts: dict | None = None, curves: dict | None = None) -> Run:
    """An unsaved run row, for what needs no database."""
    return Run(id=run_id, name=name, mode=mode, model_name="small", status="done",
               config=config if config is not None else {"data": {"mode": mode}, "train": {"seed": 0}},
               seeds={"train": 0, "split": 0}, metrics=metrics, curves=curves or {},
               class_names=list(classes), counts=counts or {"train_real": 10, "test_real": 60},
               group_id=group[0], group_kind=group[1], history=[])


# --- comparability ------------------------------------------------------------------------

def test_identical_setups_raise_no_comparability_warning(lab: Lab) -> None:
    assert comparability_warnings(lab.runs(lab.base), lab.settings) == []


def test_a_different_real_test_set_is_named(lab: Lab) -> None:
    warnings = comparability_warnings(lab.runs([*lab.base, lab.split]), lab.settings)
    assert len(warnings) == 1, warnings
    first, second = lab.base  # created after the split run: the split run is named first
    assert warnings[0] == (f"Run {lab.split} and runs {first} and {second} are tested on different "
                           "real test sets (6 images each, but not the same ones).")


def test_different_classes_are_named(lab: Lab) -> None:
    warnings = comparability_warnings(lab.runs([lab.base[0], lab.classes]), lab.settings)
    assert any("different classes" in w and f"run {lab.base[0]}: apple, banana, orange" in w
               and f"run {lab.classes}: apple, banana;" in w for w in warnings), warnings
    # Fewer classes also means other test images: said too, with both sizes.
    assert any("different real test sets (4 vs 6 images)" in w for w in warnings), warnings


def test_different_preprocessing_is_named(lab: Lab) -> None:
    warnings = comparability_warnings(lab.runs([lab.base[0], lab.black]), lab.settings)
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("The runs preprocess real images differently")
    assert "fill=white" in warnings[0] and "fill=black" in warnings[0]
    assert "original-real" in warnings[0] and "\u201creal\u201d" in warnings[0]


def test_config_diff_shows_only_the_keys_that_differ(lab: Lab) -> None:
    diff = config_diff(lab.runs([*lab.base, lab.black]))
    assert list(diff["run"]) == [str(i) for i in sorted([*lab.base, lab.black])]
    assert {"data.real_pipeline", "pipelines.real", "train.seed", "data.subsample_seed"} <= set(diff.columns)
    assert "data.val_fraction" not in diff.columns and "train.optimizer" not in diff.columns
    assert "notes" not in " ".join(diff.columns)
    row = diff.set_index("run").loc[str(lab.black)]
    assert row["data.real_pipeline"] == "real" and row["pipelines.real"].startswith("real (spec ")
    assert config_diff(lab.runs(lab.base[:1])).columns.tolist() == ["run"]


def test_setup_table_shows_protocol_and_preprocessing(lab: Lab) -> None:
    table = setup_table(lab.runs([lab.base[0], lab.black]), lab.settings).set_index("run")
    assert table.loc[str(lab.base[0]), "protocol"] == "Original study (original)"
    assert "fill=white" in table.loc[str(lab.base[0]), "real preprocessing"]
    assert table.loc[str(lab.black), "synthetic preprocessing"] == "(no synthetic images)"
    assert table.loc[str(lab.black), "real test images"] == "6"


def test_runs_from_before_recorded_pipelines_are_compared_by_preset(lab: Lab) -> None:
    old = [_run(901, config={"data": {"real_pipeline": "real"}, "train": {"image_size": 16}}),
           _run(902, config={"data": {"real_pipeline": "original-real"}, "train": {"image_size": 16}}),
           _run(903, config={"data": {"real_pipeline": "gone"}, "train": {"image_size": 16}})]
    assert protocol_label(old[0]) == "not recorded (run predates protocols)"
    assert protocol_label(_run(904, config={"protocol": None})) == "custom (no named protocol)"
    info = run_pipelines(old[0], lab.settings)["real"]
    assert not info.recorded and "as defined now" in info.text and "size=16" in info.text
    assert "no longer defined" in run_pipelines(old[2], lab.settings)["real"].text
    warnings = comparability_warnings(old, lab.settings)
    assert len(warnings) == 1 and "preprocess real images differently" in warnings[0]
    assert comparability_warnings(old[:1] * 2, lab.settings) == []


# --- metrics presentation -----------------------------------------------------------------

def _values(accuracy: float, *, n: int = 60, ci: bool = True, support: int = 30) -> dict:
    values = {"n": n, "accuracy": accuracy, "precision": accuracy - 0.1,
              "precision_weighted": accuracy - 0.05, "recall": accuracy, "recall_weighted": accuracy,
              "f1": accuracy - 0.1, "f1_weighted": accuracy - 0.05, "roc_auc": 0.9,
              "n_per_class": {"apple": support, "banana": n - support}}
    if ci:
        values["ci95"] = {key: [round(value - 0.15, 3), round(min(1.0, value + 0.15), 3)]
                          for key, value in values.items() if isinstance(value, float)}
        values["bootstrap"] = {"seed": 0, "resamples": 1000}
    return values


def test_metrics_table_labels_macro_and_weighted_with_n_and_intervals() -> None:
    config = {"data": {"mode": "real"}, "train": {"epochs": 1}}
    seeds = [_run(1, metrics={"real_test": _values(0.7)}, config=config, name="demo seed 0"),
             _run(2, metrics={"real_test": _values(0.9)}, config=config, name="demo seed 1")]
    old = _run(3, metrics={"real_test": _values(0.5, ci=False)}, name="old seed 0",
               config={"data": {"mode": "real"}, "train": {"epochs": 2}})
    table = metrics_table([*seeds, old], "real_test")
    for label in ("accuracy", "precision (macro)", "precision (weighted)", "recall (macro)",
                  "recall (weighted)", "F1 (macro)", "F1 (weighted)",
                  "ROC-AUC (macro, one-vs-rest)", "n (test images)"):
        assert label in table.columns, label
    assert "precision" not in table.columns  # never an unlabelled average
    two = table.set_index("runs").loc["1, 2"]
    # mean ± std over the two seeds, then the seeds' mean 95% interval
    assert two["accuracy"] == "0.800 ± 0.141 [0.650, 0.925]"  # [0.55, 0.85] and [0.75, 1.0]
    assert two["precision (macro)"] == "0.700 ± 0.141 [0.550, 0.850]"
    assert two["precision (weighted)"] == "0.750 ± 0.141 [0.600, 0.900]"
    assert two["n (test images)"] == "60" and two["seeds"] == 2
    assert table.set_index("runs").loc["3", "accuracy"] == "0.500"  # an older run: no interval


def test_small_test_sets_and_thin_classes_are_warned() -> None:
    small = _run(5, metrics={"real_test": _values(0.8, n=12, support=3)})
    fine = _run(6, metrics={"real_test": _values(0.8)})
    warnings = small_test_warnings([small, fine], "real_test")
    assert len(warnings) == 2, warnings
    assert warnings[0].startswith("Run 5: the real test set has only 12 images (under 30)")
    assert warnings[1].startswith("Run 5: class \u201capple\u201d has only 3 images in the real "
                                  "test set (under 5)")
    assert small_test_warnings([fine], "real_test") == []
    # Without n_per_class (older runs), the per-class report's support counts.
    old_values = {k: v for k, v in _values(0.8).items() if k != "n_per_class"}
    old = _run(7, metrics={"real_test": old_values}, curves={"real_test": {"report": [
        {"class": "apple", "support": 56}, {"class": "banana", "support": 4}]}})
    assert small_test_warnings([old], "real_test") == [
        "Run 7: class \u201cbanana\u201d has only 4 images in the real test set (under 5); "
        "per-class figures, and the macro averages that include them, rest on very few images."]
    both = _run(8, metrics={"real_test": {**_values(0.8, n=12), "n_per_class": {"apple": 0, "banana": 4}}})
    assert small_test_warnings([both, _run(9, metrics=both.metrics)], "real_test")[1].startswith(
        "Runs 8 and 9: classes \u201capple\u201d (0), \u201cbanana\u201d (4) have only that many "
        "images in the real test set (under 5)")


def test_metrics_csv_has_both_averages_intervals_and_n(lab: Lab) -> None:
    frame = pd.read_csv(io.StringIO(metrics_csv(lab.runs(lab.base))))
    for column in ("n", "precision_macro", "precision_weighted", "recall_macro", "recall_weighted",
                   "f1_macro", "f1_weighted", "accuracy_ci95_low", "accuracy_ci95_high",
                   "precision_weighted_ci95_low", "f1_macro_ci95_high", "bootstrap_seed",
                   "bootstrap_resamples", "protocol", "min_class_n"):
        assert column in frame.columns, column
    assert "precision" not in frame.columns
    row = frame[frame["eval_set"] == "real_test"].iloc[0]
    assert row["n"] == 6 and row["protocol"] == "original"
    assert row["accuracy_ci95_low"] <= row["accuracy"] <= row["accuracy_ci95_high"]


def test_group_titles_say_what_varies() -> None:
    def sweep_run(run_id: int, mode: str, level: int | None, seed: int) -> Run:
        data = {"mode": mode, "real_per_class": level,
                "synthetic_per_class": 50 if mode == "mixed" else None, "subsample_seed": seed}
        return _run(run_id, name=f"fruit [x] seed {seed}", mode=mode, group=("g1", "sweep"),
                    config={"data": data, "train": {"seed": seed}, "sweep_synthetic_per_class": 50})
    sweep = [sweep_run(10 + i, mode, level, 0)
             for i, (level, mode) in enumerate((lv, m) for lv in (5, 10, None) for m in ("real", "mixed"))]
    assert group_title(sweep) == "sweep 'fruit': real vs real+50 synthetic at 5/10/all real per class"
    repeat = [_run(20 + s, name=f"mixed small [+3 synth/class] seed {s}", mode="mixed",
                   group=("g2", "repeat"), config={"data": {"mode": "mixed", "subsample_seed": s},
                                                   "train": {"seed": s}}) for s in range(5)]
    assert group_title(repeat) == "repeat: mixed small, 5 seeds"
    reproduce = [_run(30 + 5 * v + s, name=f"original {v} seed {s}", group=("g3", "reproduce"),
                      config={"data": {"mode": "real", "variant": v, "subsample_seed": s},
                              "train": {"seed": s}, "protocol": "original"})
                 for v in range(8) for s in range(5)]
    assert group_title(reproduce) == "reproduce original: 8 configurations x 5 seeds"
    for run in reproduce:  # as the reproduce recipe names its group
        run.config = {**run.config, "group_name": "reproduce original: orchard + sd15"}
    assert group_title(reproduce) == ("reproduce original: orchard + sd15, 8 configurations "
                                      "x 5 seeds")


def test_original_comparison_puts_the_published_figures_beside_the_runs(lab: Lab) -> None:
    frame = original_comparison(lab.runs(lab.base)).set_index("metric")
    assert list(frame.index) == ["accuracy", "precision (weighted)", "recall (weighted)",
                                 "F1 (weighted)", "ROC-AUC (macro, one-vs-rest)", "n (test images)"]
    assert frame.loc["accuracy", "original study"] == "0.9636"
    assert frame.loc["n (test images)", "original study"] == "55"
    assert frame.loc["n (test images)", "this study"] == "6"
    assert " \u00b1 " in frame.loc["accuracy", "this study"]  # two seeds
    assert frame.loc["accuracy", "95% interval"].startswith("[")
    assert frame.loc["accuracy", "seeds"] == "2"


# --- the Results page -----------------------------------------------------------------------

def _frame(app: AppTest, column: str) -> pd.DataFrame:
    return next(frame.value for frame in app.dataframe if column in frame.value.columns)


def _warnings(app: AppTest) -> list[str]:
    return [w.value.replace("\\", "") for w in app.warning]  # without markdown escapes


def test_results_page_warns_and_compares_with_the_original_study(lab: Lab) -> None:
    app = AppTest.from_file(str(PAGES / "results.py"), default_timeout=60).run()
    assert not app.exception, app.exception
    # The page opens on the newest group, named in words rather than by its id.
    assert app.selectbox(key="r_group").value == lab.group
    label = next(o for o in app.selectbox(key="r_group").options if "repeat" in o)
    assert label.startswith(f"repeat: '{NAME}' (real, small), 2 seeds") and lab.group not in label
    warnings = _warnings(app)
    assert any("only 6 images (under 30)" in w for w in warnings), warnings
    assert not any("different" in w for w in warnings), warnings  # identical setups
    assert "Original study (original)" in set(_frame(app, "protocol")["protocol"])
    metrics = _frame(app, "accuracy")
    assert {"precision (macro)", "precision (weighted)", "n (test images)"} <= set(metrics.columns)
    assert " [" in metrics.iloc[0]["accuracy"]  # the bootstrap interval
    original = _frame(app, "original study")
    assert "0.9636" in set(original["original study"]) and "55" in set(original["original study"])
    assert any(m.value == "**Compared with the original study**" for m in app.markdown)
    labels = [b.proto.label for b in app.get("download_button")]
    assert "Download report (HTML)" in labels and "Download metrics (CSV)" in labels

    app.selectbox(key="r_group").set_value("").run()
    app.multiselect(key="r_runs_").set_value([lab.base[0], lab.classes, lab.black]).run()
    assert not app.exception, app.exception
    warnings = _warnings(app)
    assert any("different classes" in w for w in warnings), warnings
    assert any("preprocess real images differently" in w for w in warnings), warnings
    diff = _frame(app, "data.real_pipeline")
    assert len(diff) == 3 and "data.classes" in diff.columns


# --- the report ---------------------------------------------------------------------------

class _Links(HTMLParser):
    """Every URL-bearing attribute, and every script's src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []
        self.tags: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        self.urls += [value or "" for name, value in attrs
                      if name in ("src", "href", "srcset", "action", "poster", "data")]


def test_report_command_writes_a_self_contained_file(lab: Lab, tmp_path: Path, capsys) -> None:  # noqa: ANN001
    out = tmp_path / "nested" / "report.html"
    assert cli_main(["report", lab.group, "--out", str(out)]) == 0
    assert f"wrote {out} (2 runs" in capsys.readouterr().out
    document = out.read_text(encoding="utf-8")
    assert document.startswith("<!DOCTYPE html>") and document.rstrip().endswith("</html>")
    links = _Links()
    links.feed(document)
    outside = [url for url in links.urls if not url.startswith("#")]
    assert outside == [], outside  # no CDN, no stylesheet, no image from anywhere
    assert document.count("* plotly.js v") == 1  # the library, inline, once
    # User text is escaped wherever it appears.
    assert NAME not in document and html_escaped(NAME) in document
    for text in ("Compared with the original study", "precision (macro)", "precision (weighted)",
                 "n (test images)", "only 6 images (under 30)", "Images per class and role",
                 "Seeds", "fill=white", "Training loss", "ROC, run", "Confusion, run"):
        assert text in document, text

    assert cli_main(["report", "--runs", str(lab.base[0]), str(lab.black), "--out", str(out),
                     "--json"]) == 0
    payload = json.loads(capsys.readouterr().out)
    assert payload["runs"] == sorted([lab.base[0], lab.black])
    assert "preprocess real images differently" in out.read_text(encoding="utf-8")


def html_escaped(text: str) -> str:
    import html

    return html.escape(text)


def test_report_command_refuses_an_unknown_group_and_bad_input(lab: Lab, tmp_path: Path,
                                                               capsys) -> None:  # noqa: ANN001
    out = tmp_path / "report.html"
    assert cli_main(["report", "no-such-group", "--out", str(out)]) == 2
    assert "no training runs in group 'no-such-group'" in capsys.readouterr().err
    assert cli_main(["report", "--runs", "99999", "--out", str(out)]) == 2
    assert "no training run with id 99999" in capsys.readouterr().err
    assert cli_main(["report", "--out", str(out)]) == 2
    assert not out.exists()
    with pytest.raises(ReportError):
        render_report([], lab.settings)


@pytest.mark.browser
def test_report_opens_offline_and_draws_its_plots(lab: Lab, tmp_path: Path, output_dir: Path,
                                                  browser_page) -> None:  # noqa: ANN001 - a Page
    path = write_report(lab.group, tmp_path / "report.html", lab.settings)
    expected = path.read_text(encoding="utf-8").count('<div class="figure">')
    assert expected >= 5
    page = browser_page
    blocked: list[str] = []
    errors: list[str] = []

    def offline(route) -> None:  # noqa: ANN001 - playwright Route
        if route.request.url.startswith("file:"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort()

    page.route("**/*", offline)
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.goto(path.as_uri())
    # Every figure drawn: its SVG, with a trace or a heatmap in it.
    page.wait_for_function(
        """n => { const plots = [...document.querySelectorAll('.js-plotly-plot')];
                  return plots.length === n && plots.every(p => p.querySelector('.main-svg')
                    && p.querySelector('.scatterlayer .trace, .heatmaplayer .hm, .heatmaplayer image')); }""",
        arg=expected, timeout=30_000)
    page.screenshot(path=str(output_dir / "report.png"), full_page=True)
    assert blocked == [] and errors == []
    assert page.locator(".warning").first.is_visible()
    assert page.title().startswith("SynthLab report: repeat:")
