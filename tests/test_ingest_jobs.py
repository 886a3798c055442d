"""The ``import`` job: runs in the worker, resumes after a crash, cancels, cleans its staging."""

from __future__ import annotations

import datetime as dt

from tests.imagemaker import make_imagefolder

SMALL = (32, 24)


def test_interrupted_import_job_resumes_without_adding_twice(settings, tmp_path):
    from core import gallery, jobs
    from core.db.engine import run_write
    from core.db.models import Job
    from core.ingest import ImportOptions, import_dataset
    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    root = make_imagefolder(tmp_path / "fruit", ["apple", "plum"], 4, size=SMALL)
    job_id = submit_import(str(root), dataset="fruit", user="ann", settings=settings)
    # A worker claimed it, imported the apples, and died.
    import_dataset(root / "apple", settings, ImportOptions(dataset="fruit", force_class="apple"))

    def crash(session):
        job = session.get(Job, job_id)
        job.status, job.worker_id, job.attempts = "running", "otherhost:1", 1
        job.heartbeat_at = dt.datetime(2000, 1, 1)
    run_write(crash, settings)
    run_worker(settings, once=True)
    job = jobs.get_job(job_id)
    assert job.status == "done" and job.attempts == 2
    assert (job.result["added"], job.result["duplicates"]) == (4, 4)
    assert gallery.count(gallery.GalleryFilter()) == 8
    assert any("resumed" in e.message for e in jobs.job_events(job_id))
    # The live job panel says what the numbers count.
    from webui.jobs import _job_line

    assert job.progress_unit == "files" and "8/8 files" in _job_line(job)


def test_cancelled_import_keeps_what_was_committed_and_removes_staging(settings, tmp_path):
    from core import gallery, jobs
    from core.ingest import ImportOptions, import_dataset
    from core.ingest.jobs import stage_uploads, submit_import
    from core.jobs import JobCancelled

    root = make_imagefolder(tmp_path / "fruit", ["lime"], 6, size=SMALL)
    seen = []

    def stop_after_first_batch(done, total, message):
        seen.append(done)
        if done == 3:
            raise JobCancelled()
    try:
        import_dataset(root, settings, ImportOptions(workers=1, batch_size=2),
                       progress=stop_after_first_batch)
    except JobCancelled:
        pass
    assert gallery.count(gallery.GalleryFilter()) == 2  # the committed batch stays

    staged = stage_uploads([(p.name, p.read_bytes()) for p in sorted((root / "lime").iterdir())],
                           settings)
    job_id = submit_import(str(staged), force_class="lime", settings=settings)
    assert jobs.request_cancel(job_id, by="ann")  # cancelled while queued
    from core.worker import run_worker

    run_worker(settings, once=True)
    assert jobs.get_job(job_id).status == "cancelled"
    # No job needs the staged upload any more: the check finds and removes it.
    from core import maintenance

    report = maintenance.check(settings, repair=True, min_age_seconds=0)
    assert f"uploads/{staged.name}" in report.temp_files and not staged.exists()


def test_failed_import_job_reports_the_reason(settings, tmp_path):
    from core import jobs
    from core.ingest.jobs import submit_import
    from core.worker import run_worker

    job_id = submit_import(str(tmp_path / "gone"), settings=settings)
    run_worker(settings, once=True)
    job = jobs.get_job(job_id)
    assert job.status == "failed" and "path does not exist" in job.error
