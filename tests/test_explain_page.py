"""The Explain page in Streamlit's AppTest, with a run trained through the training code."""

from __future__ import annotations

import json
from pathlib import Path

from streamlit.testing.v1 import AppTest

from core import jobs
from core.imageio import encode_png
from core.worker import run_worker
from imagemaker import fruit_image
from test_explain_fixtures import one_torch_thread, trained, trained_template  # noqa: F401

PAGE = str(Path(__file__).resolve().parent.parent / "pages" / "explain.py")
TIMEOUT = 90


def _page() -> AppTest:
    return AppTest.from_file(PAGE, default_timeout=TIMEOUT)


def _figures(at: AppTest) -> list[dict]:
    return [json.loads(chart.proto.spec) for chart in at.get("plotly_chart")]


def _heatmap(at: AppTest) -> dict:
    for figure in _figures(at):
        kinds = [trace.get("type") for trace in figure["data"]]
        if "heatmap" in kinds:
            return figure["data"][kinds.index("heatmap")]
    raise AssertionError("no heatmap on the page")


def test_page_without_runs_says_what_to_do(settings):
    at = _page().run()
    assert not at.exception
    assert any("No finished training run" in info.value for info in at.info)


def test_explain_page_end_to_end(trained):
    settings, info = trained
    at = _page().run()
    assert not at.exception, at.exception
    assert at.selectbox(key="x_run").value == info.run_id
    # A gallery image is explained straight away: heatmap over the input, predictions.
    heatmap = _heatmap(at)
    z = heatmap["z"]  # plotly 7 sends arrays as typed binary data
    assert (z["shape"].replace(" ", "") == "32,32") if isinstance(z, dict) else (len(z), len(z[0])) == (32, 32)
    assert heatmap["opacity"] == 0.55 and "attribution" in heatmap["hovertemplate"]
    labels = [m.label for m in at.metric]
    assert "Predicted" in labels and "True class" in labels

    at.slider(key="x_opacity").set_value(0.3).run()
    assert _heatmap(at)["opacity"] == 0.3

    at.selectbox(key="x_method").set_value("occlusion").run()
    at.selectbox(key="x_baseline").set_value("mean").run()
    assert not at.exception, at.exception
    assert "Occlusion" in json.dumps(_figures(at))

    at.radio(key="x_target").set_value("any class").run()
    at.selectbox(key="x_target_class").set_value("banana").run()
    assert "target: banana" in json.dumps(_figures(at))

    # Only real images of one class, through the Gallery filters.
    at.selectbox(key="x_f_source").set_value("real").run()
    at.selectbox(key="x_f_class").set_value("apple").run()
    options = at.selectbox(key="x_image").options
    assert options and all("apple" in o and "real" in o for o in options)
    assert any(m.label == "Attribution on margins" for m in at.metric)

    # An upload: explained like an indexed image; a broken file gets a clear error.
    at.radio(key="x_origin").set_value("Upload").run()
    upload = encode_png(fruit_image("banana", 4242, (30, 50)))
    at.file_uploader(key="x_upload").set_value(("mine.png", upload, "image/png")).run()
    assert not at.exception, at.exception
    assert any("source: upload" in c.value for c in at.caption)
    assert "True class" not in [m.label for m in at.metric]
    at.file_uploader(key="x_upload").set_value(("broken.png", b"not a picture", "image/png")).run()
    assert any("not an image" in e.value for e in at.error)

    # Misclassified test images: scored with the run's model on demand.
    at.radio(key="x_origin").set_value("Misclassified test images").run()
    at.button(key="x_find_wrong").click().run()
    assert not at.exception, at.exception
    assert any("evaluation images are misclassified" in c.value for c in at.caption)

    # Compare real vs synthetic of one class: the maps not cached yet are a background job
    # (the page is not held for them), shown as they arrive; done, the means show.
    at.button(key="x_compare").click().run()
    assert not at.exception, at.exception
    compare_job = jobs.list_jobs(kind="explain", settings=settings)[0]
    assert compare_job.title.startswith("Compare real vs synthetic") and compare_job.status == "queued"
    assert any("You can leave this page" in p.proto.text for p in at.get("progress"))
    assert not any(m.label.startswith("Mean attribution on margins") for m in at.metric)
    # A job that fails says why as a sentence (no exception class name), and Show retries.
    jobs.finish(compare_job.id, jobs.FAILED, error="RuntimeError: not enough memory for the maps",
                settings=settings)
    at.run()
    assert any(c.value == f"Job #{compare_job.id} failed: Not enough memory for the maps"
               for c in at.caption), [c.value for c in at.caption]
    at.button(key="x_compare").click().run()
    compare_job = jobs.list_jobs(kind="explain", settings=settings)[0]
    assert compare_job.status == "queued"
    run_worker(settings, once=True)
    assert jobs.get_job(compare_job.id, settings).status == jobs.DONE
    at.run()
    assert any(m.label.startswith("Mean attribution on margins (real)") for m in at.metric)
    assert len(jobs.list_jobs(kind="explain", settings=settings)) == 2  # nothing queued again

    # A batch job over the run's test images, then the margins per run.
    at.selectbox(key="x_method").set_value("saliency").run()
    at.button(key="x_b_submit").click().run()
    assert not at.exception, at.exception
    assert any("Queued job" in s.value for s in at.success)
    job = jobs.list_jobs(kind="explain", settings=settings)[0]
    assert job.id != compare_job.id and job.created_by == "anonymous" and job.progress_total > 0
    run_worker(settings, once=True)
    assert jobs.get_job(job.id, settings).status == jobs.DONE
    at.run()
    at.selectbox(key="x_b_which").set_value("all images of a class").run()
    at.selectbox(key="x_b_class").set_value("apple").run()
    at.button(key="x_b_submit").click().run()
    newest = jobs.list_jobs(kind="explain", settings=settings)[0]
    assert newest.id != job.id and newest.progress_total == (len(info.real_ids) + len(info.synthetic_ids)) // 2
    margin_charts = [f for f in _figures(at) if any(t.get("type") == "bar" and "margins" in t.get("name", "")
                                                    for t in f["data"])]
    assert margin_charts, "the margins-per-run chart should show after the job"
    assert not at.exception
