"""The Train and Results pages in AppTest, with a finished run and a finished sweep."""

from __future__ import annotations

from pathlib import Path

import torch
from streamlit.testing.v1 import AppTest

from core.training.data import DataSpec
from core.training.experiments import ExperimentRequest, create_runs, execute_run, list_runs
from core.training.trainer import TrainConfig
from test_training_fixtures import add_fruit_images

PAGES = Path(__file__).resolve().parent.parent / "pages"
torch.set_num_threads(1)  # tiny models: threads only add overhead on a shared 2-core box


def _finished_runs(settings) -> list[int]:  # noqa: ANN001
    add_fruit_images(settings, "orchard", per_class=10, seed=1)
    add_fruit_images(settings, "generated", per_class=8, seed=2, source="synthetic")
    request = ExperimentRequest(data=DataSpec(classes=["apple", "banana", "lime"]),
                                train=TrainConfig(epochs=2, image_size=16, batch_size=8),
                                sweep_levels=[2, None], sweep_synthetic_per_class=3, name="sweep")
    ids = create_runs(request, created_by="alice", settings=settings)
    for run_id in ids:
        execute_run(run_id, settings)
    return ids


def _metrics_table(app: AppTest):  # noqa: ANN202 - a DataFrame
    return next(frame.value for frame in app.dataframe if "accuracy" in frame.value.columns)


def _plotly_titles(app: AppTest) -> list[str]:
    import json

    titles = []
    for chart in app.get("plotly_chart"):
        spec = json.loads(chart.proto.spec)
        title = spec.get("layout", {}).get("title", {})
        titles.append(title.get("text", "") if isinstance(title, dict) else str(title))
    return titles


def test_results_page_shows_metrics_curves_and_the_data_efficiency_plot(settings) -> None:
    ids = _finished_runs(settings)
    app = AppTest.from_file(str(PAGES / "results.py"), default_timeout=60).run()
    assert not app.exception, app.exception
    # Default: the newest run's sweep group; without a group, the newest run alone.
    group = list_runs(ids=ids, settings=settings)[0].group_id
    assert app.selectbox(key="r_group").value == group
    app.selectbox(key="r_group").set_value("").run()
    assert _metrics_table(app).shape[0] == 1
    app.selectbox(key="r_group").set_value(group).run()
    assert not app.exception, app.exception
    metrics = _metrics_table(app)
    assert len(metrics) == 4  # 2 levels x with/without synthetic
    assert {"accuracy", "precision (macro)", "precision (weighted)", "recall (macro)",
            "F1 (weighted)", "ROC-AUC (macro, one-vs-rest)", "n (test images)"} <= set(metrics.columns)
    titles = _plotly_titles(app)
    assert any("vs real training images per class" in t for t in titles)
    assert sum(t.startswith("ROC, run") for t in titles) == 4
    assert any(t.startswith("Confusion, run") and "counts" in t for t in titles)
    assert any(t == "Training loss" for t in titles)
    csv = app.get("download_button")[0]
    assert csv is not None
    app.radio(key="r_set").set_value("synthetic_test").run()
    assert not app.exception
    app.toggle(key="r_norm").set_value(True).run()
    assert any("row-normalised" in t for t in _plotly_titles(app))


def test_results_page_without_runs_says_what_to_do(settings) -> None:
    app = AppTest.from_file(str(PAGES / "results.py"), default_timeout=60).run()
    assert not app.exception
    assert "No finished training run" in app.info[0].value


def test_train_page_submits_a_job_and_reports_bad_input(settings) -> None:
    empty = AppTest.from_file(str(PAGES / "train.py"), default_timeout=60).run()
    assert not empty.exception and "Training needs real images" in empty.info[0].value
    assert "python -m core ingest" in empty.info[0].value  # the real subcommand

    add_fruit_images(settings, "orchard", per_class=6, seed=1)
    app = AppTest.from_file(str(PAGES / "train.py"), default_timeout=60).run()
    assert not app.exception, app.exception
    app.radio(key="t_mode").set_value("synthetic")
    app.button[0].click().run()  # the form's submit button
    assert not app.exception
    assert "not enough synthetic images" in app.error[0].value
    assert list_runs(settings=settings) == []  # nothing half-created
    # The reproduction without a synthetic dataset: says where to get one, the page names
    # in bold (not as escaped asterisks).
    next(b for b in app.button if b.label.startswith("Queue the reproduction")).click().run()
    reason = app.error[0].value
    assert "**Generate**" in reason and "\\*" not in reason, reason
    assert list_runs(settings=settings) == []

    app.radio(key="t_mode").set_value("real")
    app.number_input(key="t_epochs").set_value(1)
    app.number_input(key="t_repeats").set_value(2)
    app.text_input(key="t_name").set_value("page run")
    app.button[0].click().run()
    assert not app.exception, app.exception
    assert "Queued job" in app.success[0].value
    runs = list_runs(settings=settings)
    assert len(runs) == 2 and all(r.status == "queued" and r.job_id for r in runs)
    assert {r.seeds["train"] for r in runs} == {0, 1}
