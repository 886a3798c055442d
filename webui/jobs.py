"""The live job list shown on Home, Generate and Train: progress, rate, time left, log, cancel.

Rendered in a fragment that reruns itself (every few seconds while a job is active, see
``live_fragment``), so every user sees the worker's progress without reloading the page
and without rerunning the whole page.
"""

from __future__ import annotations

import datetime as dt
import re

import streamlit as st

from core import jobs
from webui.page import current_identity, error_text, escape_markdown


def _format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    return str(dt.timedelta(seconds=int(seconds)))


def job_stage(job) -> str | None:  # noqa: ANN001
    """What a running job does beyond its counted progress, as its handler reported it in
    the partial result (``{"stage": "evaluating"}``); None otherwise."""
    if job.status != jobs.RUNNING or not isinstance(job.result, dict):
        return None
    stage = job.result.get("stage")
    return str(stage) if stage else None


def _job_line(job) -> str:  # noqa: ANN001
    parts = [f"**#{job.id} {escape_markdown(job.title or job.kind)}**", f"`{job.status}`"]
    unit = f" {job.progress_unit}" if job.progress_unit else ""
    if job.progress_total:
        parts.append(f"{job.progress_done:,}/{job.progress_total:,}{unit}")
    stage = job_stage(job)
    rate, seconds_left = jobs.progress_figures(job)
    if stage:
        # Past the counted steps (a training run's evaluation): a rate and "0:00:00 left"
        # would say it is stuck.
        parts.append(f"**{escape_markdown(stage)}**")
    elif rate is not None:
        # The job's one rate (core.jobs.window_rate); progress messages carry no rate of
        # their own, so the bar below never shows a second, different figure.
        parts.append(f"{rate:.2f}{unit}/s, {_format_seconds(seconds_left)} left")
    parts.append(f"by {escape_markdown(job.created_by or 'anonymous')}")
    return " · ".join(parts)


def _may_cancel(job) -> bool:  # noqa: ANN001
    """Cancelling someone else's job needs the admin role when sign-in is on (issue 8)."""
    from core.users.permissions import can_modify

    return can_modify(current_identity(), job.created_by, "cancel")


# An absolute POSIX path (two parts or more), not preceded by a word character or a dot
# (so "images/s" and "../x" stay): what a server-side error message carries.
_SERVER_PATH = re.compile(r"(?<![\w.~])/(?:[^\s/'\"`:,;()\[\]]+/)+([^\s/'\"`:,;()\[\]]*)")


def public_text(text: str | None) -> str:
    """A job's error, message or log line as every viewer may see it.

    Job panels show everyone's jobs, and errors from the worker carry server paths (data
    folder, cache, model files): only admins see them whole; others see the file name.
    """
    from core.users.permissions import is_admin

    if not text or is_admin(current_identity()):
        return text or ""
    return _SERVER_PATH.sub(lambda m: "…/" + m.group(1), text)


# How often live panels poll while no job of theirs is queued or running.
IDLE_REFRESH_SECONDS = 10.0


def _any_active(kinds: tuple[str, ...] | None) -> bool:
    return any(jobs.list_jobs(kind=kind, statuses=jobs.ACTIVE_STATUSES, limit=1)
               for kind in kinds or (None,))


def live_fragment(kinds: tuple[str, ...] | None, seconds: float):  # noqa: ANN201 - decorator
    """A fragment that redraws every ``seconds`` while a job of ``kinds`` is queued or
    running, and every ``IDLE_REFRESH_SECONDS`` otherwise.

    An outer fragment polls at the idle interval and checks for active jobs; while there
    are some it draws the panel inside a nested fragment with the fast interval. Streamlit
    (re)sends a nested fragment's timer each time its parent runs and stops it once the
    parent no longer draws it, so the interval follows the jobs without a full-page
    ``st.rerun()``. That matters: a full rerun requested from a fragment carries the page
    it was started on, and one that lands just after a click on another page's link sent
    the user back (seen in the browser test), while fast polling on idle pages only adds
    DB queries and chances for such races.
    """

    def decorate(render):  # noqa: ANN001, ANN202
        @st.fragment(run_every=max(seconds, IDLE_REFRESH_SECONDS))
        def live() -> None:
            if not _any_active(kinds):
                render()
                return

            @st.fragment(run_every=seconds)
            def follow() -> None:
                render()

            follow()
        return live
    return decorate


def _cancel(job_id: int, key: str) -> None:
    """The Cancel button's callback. It runs inside the fragment's rerun, which skips the
    page's sign-in check (``webui.boot``), so core re-reads the user's role at this moment
    (``jobs.request_cancel`` with the identity); a refusal is audited there and shown here."""
    from core.users.permissions import PermissionDenied

    try:
        jobs.request_cancel(job_id, by=current_identity())
    except PermissionDenied as exc:
        st.session_state[f"{key}-refused"] = str(exc)


def render_job_list(kinds: tuple[str, ...] | None = None, *, user: str | None = None,
                    limit: int = 10, key: str = "jobs", refresh_seconds: float = 2.0,
                    can_cancel=None) -> None:  # noqa: ANN001 - callable(job) -> bool
    """Show the newest jobs (of ``kinds``); active ones update live."""

    @live_fragment(kinds, refresh_seconds)
    def _panel() -> None:
        rows = []
        for kind in kinds or (None,):
            rows.extend(jobs.list_jobs(kind=kind, limit=limit))
        rows = sorted(rows, key=lambda j: j.id, reverse=True)[:limit]
        refused = st.session_state.pop(f"{key}-refused", None)
        if refused:
            st.error(f"Not cancelled: {escape_markdown(refused)}")
        if not rows:
            st.caption("No jobs yet.")
            return
        for job in rows:
            with st.container(border=True):
                st.markdown(_job_line(job))
                if job.progress_total:
                    st.progress(min(1.0, job.progress_done / max(1, job.progress_total)),
                                text=escape_markdown(public_text(job.message)) or None)
                elif job.message:
                    st.caption(escape_markdown(public_text(job.message)))
                if job.error:
                    st.error(error_text(public_text(job.error)))
                hosts = (job.result or {}).get("hosts") if isinstance(job.result, dict) else None
                if hosts:  # a generation job run on a Ray cluster (core.generation.distributed)
                    st.caption("Made on " + ", ".join(f"{escape_markdown(str(host))} ({count})"
                                                      for host, count in hosts.items()))
                log_area = st
                if job.status in jobs.ACTIVE_STATUSES:
                    allowed = (can_cancel or _may_cancel)(job)
                    # Wide enough for "Cancel" in the half-width panel on Home.
                    cols = st.columns([1, 3])
                    # A callback, so the click counts even if a timed refresh of this
                    # fragment lands at the same moment. Someone else's job: disabled, and
                    # the reason on hover, rather than refused after the click.
                    cols[0].button("Cancel", key=f"{key}-cancel-{job.id}", on_click=_cancel,
                                   args=(job.id, key), disabled=not allowed,
                                   help=None if allowed else
                                   f"Only {job.created_by or 'its owner'} or an admin can "
                                   "cancel this job.")
                    log_area = cols[1]
                with log_area.expander("Log"):
                    events = jobs.job_events(job.id, limit=50)
                    st.code("\n".join(f"{e.at:%H:%M:%S} {e.level:<7} {public_text(e.message)}"
                                      for e in events) or "(empty)", language=None)

    _panel()
