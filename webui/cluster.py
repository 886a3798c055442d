"""The Admin page's Cluster tab: the Ray cluster's nodes, GPUs and what each is running.

The report comes from ``python -m core cluster --json`` in a child process, so the
dashboard itself never imports Ray or joins the cluster (a slow or unreachable head only
costs that child its timeout).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st

from core.config import Settings

REPORT_TIMEOUT_S = 60
ROOT = Path(__file__).resolve().parent.parent


def cluster_report_via_cli(settings: Settings) -> dict[str, Any]:
    """The cluster report, or ``{"error": ...}`` saying why there is none."""
    env = dict(os.environ, SYNTHLAB_HOME=str(settings.home_path),
               SYNTHLAB_EXECUTION_BACKEND=settings.execution_backend,
               SYNTHLAB_RAY_ADDRESS=settings.ray_address)
    try:
        done = subprocess.run([sys.executable, "-m", "core", "cluster", "--json"], cwd=ROOT,
                              env=env, capture_output=True, text=True, timeout=REPORT_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"error": f"the Ray cluster at {settings.ray_address} did not answer within "
                         f"{REPORT_TIMEOUT_S} s"}
    if done.returncode != 0:
        lines = (done.stderr or done.stdout).strip().splitlines()
        return {"error": lines[-1] if lines else f"exit status {done.returncode}"}
    return json.loads(done.stdout)


def show_cluster(settings: Settings) -> None:
    if settings.execution_backend.strip().lower() != "ray":
        st.info("Execution backend: **local**. Jobs run in worker processes on this host. "
                "Set `SYNTHLAB_EXECUTION_BACKEND=ray` (and `SYNTHLAB_RAY_ADDRESS`) to spread "
                "generation, training and attribution over a Ray cluster (see the README, "
                "\"Scale out with Ray\").")
        return
    st.caption(f"Execution backend: ray, cluster at `{settings.ray_address}`.")
    if not st.button("Show the cluster's nodes", key="cluster_refresh"):
        return
    with st.spinner("Asking the Ray cluster..."):
        report = cluster_report_via_cli(settings)
    if "error" in report:
        st.error(f"No cluster report: {report['error']}")
        return
    cols = st.columns(3)
    cols[0].metric("Nodes", len(report["nodes"]))
    cols[1].metric("GPUs", f"{report['gpus_total']:g}")
    cols[2].metric("GPUs free", f"{report['gpus_free']:g}")
    st.dataframe(pd.DataFrame([{"host": node["hostname"], "IP": node["ip"],
                                "alive": node["alive"], "GPUs": node["gpus"],
                                "CPUs": node["cpus"],
                                "running": "; ".join(node["work"]) or "idle"}
                               for node in report["nodes"]]), hide_index=True)
    if report.get("note"):
        st.caption(report["note"])
