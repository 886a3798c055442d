"""The ``ray`` execution backend: connecting to a Ray cluster and describing it.

With ``SYNTHLAB_EXECUTION_BACKEND=ray`` the worker on the dashboard's host stays the only
process that writes the image store and the database; Ray actors and tasks on any host
do the heavy work (generation batches, training runs, attribution batches) and send
their results back through Ray's object store. Nothing on a remote host touches the data
folder or the database.

Ray is an optional extra (``requirements-ray.txt``): it is imported here, lazily, and
only when the backend is ``ray``. The dashboard and the local backend never import it.
"""

from __future__ import annotations

import os
import socket
from typing import Any

from core.config import Settings, get_settings

EXECUTION_BACKENDS = ("local", "ray")


class ClusterError(RuntimeError):
    """Ray is not installed, not reachable, or the backend setting is wrong."""


def uses_ray(settings: Settings | None = None) -> bool:
    """Whether heavy work goes to Ray (``execution_backend = ray``)."""
    backend = (settings or get_settings()).execution_backend.strip().lower()
    if backend not in EXECUTION_BACKENDS:
        raise ClusterError(f"execution_backend must be one of {', '.join(EXECUTION_BACKENDS)}, "
                           f"not {backend!r} (SYNTHLAB_EXECUTION_BACKEND)")
    return backend == "ray"


def import_ray() -> Any:  # noqa: ANN401 - the ray module
    try:
        import ray
    except ModuleNotFoundError as exc:
        raise ClusterError("the ray execution backend needs Ray on this host and on every "
                           "cluster host: pip install -r requirements-ray.txt") from exc
    return ray


def connect(settings: Settings | None = None) -> Any:  # noqa: ANN401 - the ray module
    """Join the configured cluster once per process (``ray_address``); returns ``ray``."""
    settings = settings or get_settings()
    ray = import_ray()
    if ray.is_initialized():
        return ray
    # Quiet, bounded Ray in a shared process: no repeated-log folding surprises, no
    # worker logs streamed into the SynthLab worker log line by line.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    address = settings.ray_address.strip() or "auto"
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "ignore_reinit_error": True}
    if address == "local":
        options["object_store_memory"] = settings.ray_object_store_mb * 1024 * 1024
    elif address.startswith("ray://"):
        # Ray Client: the server starts the driver; only the address is ours to give.
        options = {"address": address}
    else:
        options["address"] = address
    try:
        ray.init(**options)
    except (ConnectionError, RuntimeError) as exc:
        raise ClusterError(f"cannot reach the Ray cluster at {address!r} "
                           f"(SYNTHLAB_RAY_ADDRESS): {exc}") from exc
    return ray


def this_host() -> dict[str, str]:
    """Where the calling code runs: host name and the node's IP as Ray knows it."""
    try:
        import ray

        ip = ray.util.get_node_ip_address() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - only a label
        ip = ""
    return {"hostname": socket.gethostname(), "ip": ip}


def cluster_gpus(ray: Any) -> int:  # noqa: ANN401
    return int(ray.cluster_resources().get("GPU", 0))


def worker_resources(ray: Any) -> dict[str, float]:  # noqa: ANN401
    """What one actor or task asks for: a whole GPU when the cluster has GPUs, else a CPU."""
    return {"num_gpus": 1, "num_cpus": 1} if cluster_gpus(ray) else {"num_cpus": 1}


def actor_count(ray: Any, settings: Settings, work_units: int) -> int:  # noqa: ANN401
    """Actors for a job: ``ray_actors``, else one per GPU (per CPU without GPUs), at most
    one per unit of work."""
    wanted = settings.ray_actors
    if wanted <= 0:
        resources = ray.cluster_resources()
        wanted = int(resources.get("GPU", 0)) or int(resources.get("CPU", 1))
    return max(1, min(wanted, work_units))


def cluster_report(settings: Settings | None = None) -> dict[str, Any]:
    """Nodes, their GPUs and CPUs, and the actors and tasks running on each."""
    settings = settings or get_settings()
    ray = connect(settings)
    nodes = []
    for node in ray.nodes():
        resources = node.get("Resources", {})
        nodes.append({"node_id": node.get("NodeID", ""),
                      "hostname": node.get("NodeManagerHostname", ""),
                      "ip": node.get("NodeManagerAddress", ""), "alive": bool(node.get("Alive")),
                      "cpus": resources.get("CPU", 0), "gpus": resources.get("GPU", 0),
                      "work": []})
    by_id = {node["node_id"]: node for node in nodes}
    state_note = _add_running_work(by_id)
    available = ray.available_resources()
    return {"address": settings.ray_address, "nodes": nodes,
            "gpus_total": ray.cluster_resources().get("GPU", 0),
            "gpus_free": available.get("GPU", 0), "cpus_free": available.get("CPU", 0),
            "note": state_note}


def _add_running_work(nodes: dict[str, dict[str, Any]]) -> str:
    """Fill each node's ``work`` from Ray's state API, where the cluster offers it."""
    try:
        from ray.util.state import list_actors, list_tasks

        actors = list_actors(filters=[("state", "=", "ALIVE")], timeout=5)
        tasks = list_tasks(filters=[("state", "=", "RUNNING")], timeout=5)
    except Exception as exc:  # noqa: BLE001 - the state API needs the dashboard's agent
        return f"what each node runs is unknown here ({type(exc).__name__}): start the head " \
               f"with its dashboard (the default of `ray start --head`) to see it"
    for actor in actors:
        node = nodes.get(getattr(actor, "node_id", None) or "")
        if node is not None:
            node["work"].append(f"actor {actor.class_name}")
    for task in tasks:
        node = nodes.get(getattr(task, "node_id", None) or "")
        if node is not None:
            node["work"].append(f"task {task.name}")
    return ""


def format_report(report: dict[str, Any]) -> str:
    """The report as lines of text (``python -m core cluster``)."""
    lines = [f"Ray cluster at {report['address']}: {len(report['nodes'])} node(s), "
             f"{report['gpus_total']:g} GPU(s), {report['gpus_free']:g} free"]
    for node in report["nodes"]:
        state = "alive" if node["alive"] else "dead"
        work = "; ".join(node["work"]) or "idle"
        lines.append(f"  {node['hostname'] or '?'} ({node['ip']}) {state}: {node['gpus']:g} GPU, "
                     f"{node['cpus']:g} CPU - {work}")
    if report.get("note"):
        lines.append(report["note"])
    return "\n".join(lines)
