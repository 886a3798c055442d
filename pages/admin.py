"""Admin: user accounts, the audit log, the worker, the data check and the server settings."""

from __future__ import annotations

import importlib

import pandas as pd
import streamlit as st

from core import jobs
from core.db.engine import display_url
from core.users import accounts, audit
from core.users.permissions import PermissionDenied, is_admin
from core.users.server import restart_worker, worker_status
from webui import auth_mode, boot, current_identity, error_text, escape_markdown

settings = boot()
identity = current_identity()
admin = is_admin(identity)

st.title("Admin")
users_tab, audit_tab, worker_tab, cluster_tab, check_tab, settings_tab = st.tabs(
    ["Users", "Audit log", "Worker", "Cluster", "Data check", "Server settings"])

with users_tab:
    if not admin:
        st.info("Only admins can see and manage user accounts.")
    else:
        mode = auth_mode(settings)
        if mode == "none":
            st.caption("Auth mode is `none`: accounts take effect once `auth_mode` is "
                       "`password` or `oidc` (see the README).")
        users = accounts.list_users(settings)
        if users:
            st.dataframe(pd.DataFrame([{"name": u.name, "admin": u.is_admin,
                                        "password": u.has_password, "since": u.created_at}
                                       for u in users]), hide_index=True)
        else:
            st.caption("No accounts yet.")
        with st.form("admin_add_user", clear_on_submit=True):
            st.subheader("Add a user")
            new_name = st.text_input("Name (an e-mail address for OIDC users)")
            new_password = st.text_input("Password (empty: OIDC sign-in only)", type="password")
            new_admin = st.checkbox("Admin")
            if st.form_submit_button("Add user"):
                try:
                    # The identity, not the name: core checks it is an admin right now.
                    accounts.add_user(new_name, new_password or None, is_admin=new_admin,
                                      actor=identity, settings=settings)
                    st.success(f"Added {escape_markdown(new_name.strip())}.")
                except (accounts.AccountError, PermissionDenied) as exc:
                    st.error(error_text(exc))
        if users:
            names = [u.name for u in users]
            with st.form("admin_change_user", clear_on_submit=True):
                st.subheader("Change a user")
                target = st.selectbox("User", names)
                change = st.radio("Change", ["Set password", "Make admin", "Remove admin role",
                                             "Remove account"], horizontal=True)
                password = st.text_input("New password", type="password")
                if st.form_submit_button("Apply"):
                    try:
                        if change == "Set password":
                            accounts.set_password(target, password, actor=identity,
                                                  settings=settings)
                        elif change == "Remove account":
                            accounts.remove_user(target, actor=identity, settings=settings)
                        else:
                            accounts.set_admin(target, change == "Make admin",
                                               actor=identity, settings=settings)
                        st.success(f"{change}: {escape_markdown(target)}")
                    except (accounts.AccountError, PermissionDenied) as exc:
                        st.error(error_text(exc))

# The audit log, the worker log and the server settings tell who did what, where the
# server keeps its files and how it reaches its database: with sign-in on, admins only.
ADMINS_ONLY = "Only admins can see this when sign-in is on."

with audit_tab:
    if not admin:
        st.info(ADMINS_ONLY)
    else:
        st.caption("Who relabelled, deleted, cancelled or changed accounts (and who was "
                   "refused), newest first.")
        cols = st.columns(2)
        actor = cols[0].text_input("Only by user", key="audit_actor")
        action = cols[1].text_input("Only action (e.g. delete, relabel, cancel, refused)",
                                    key="audit_action")
        rows = audit.entries(actor=actor.strip() or None, action=action.strip() or None,
                             limit=500, settings=settings)
        if rows:
            st.dataframe(pd.DataFrame([{"when": r.at, "who": r.actor, "action": r.action,
                                        "target": f"{r.target_kind or ''} {r.target_id or ''}".strip(),
                                        "detail": str(r.detail or "")} for r in rows]),
                         hide_index=True)
        else:
            st.caption("Nothing recorded yet.")

with worker_tab:
    status = worker_status(settings)
    cols = st.columns(3)
    cols[0].metric("Worker", "alive" if status.alive else "not running")
    cols[1].metric("PID", str(status.pid) if status.pid else "-")
    counts = jobs.counts_by_status(settings)
    cols[2].metric("Jobs waiting", counts.get(jobs.QUEUED, 0) + counts.get(jobs.INTERRUPTED, 0))
    st.caption(" · ".join(f"{name}: {count}" for name, count in sorted(counts.items()))
               or "No jobs yet.")
    # Shown to everyone, disabled with the reason for non-admins (not refused after a click).
    if st.button("Restart worker", disabled=not admin,
                 help="Stops the worker (its job resumes) and starts a new one" if admin
                 else "Only admins can restart the worker."):
        try:
            status = restart_worker(settings, actor=identity.name,
                                    stop_with_this_process=True)
            st.success(f"Worker running as PID {status.pid}." if status.alive
                       else "Worker stopped; none started (see its log).")
        except RuntimeError as exc:
            st.error(error_text(exc))
    if admin:  # the log holds server paths and other users' job details
        with st.expander("Worker log (last lines)"):
            st.code(status.log_tail or "(empty)", language=None)

with cluster_tab:
    from webui.cluster import show_cluster

    show_cluster(settings)

with check_tab:
    st.caption("Compares the index with the image folder: missing files, orphan files, "
               "left-over temporary files.")
    try:
        maintenance = importlib.import_module("core.maintenance")
    except ModuleNotFoundError:
        maintenance = None
    if maintenance is None:
        st.info("The data check is not available in this installation.")
    else:
        repair = st.checkbox("Repair what is found", disabled=not admin,
                             help=None if admin else "Only admins can repair.")
        if st.button("Run check"):
            with st.spinner("Checking..."):
                report = maintenance.check(settings, repair=bool(repair and admin))
            if repair and admin:
                audit.record_now(identity.name, "repair", target_kind="data",
                                 settings=settings)
            st.json(report.to_dict())
            if report.ok:
                st.success("The image folder and the index agree.")
            elif not (repair and admin):
                st.warning("Problems found; an admin can repair them here or with "
                           "`python -m core check --repair`.")

with settings_tab:
    if not admin:
        st.info(ADMINS_ONLY)
    else:
        st.caption("Read-only here: set with `SYNTHLAB_*` environment variables or "
                   "`.streamlit/secrets.toml` and restart the server.")
        public = settings.to_public_dict()
        # Never the database password, wherever it sits in the URL.
        public["db_url"] = display_url(settings.database_url)
        public["auth_mode (in force)"] = auth_mode(settings)
        st.json(public)
