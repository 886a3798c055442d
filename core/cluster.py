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
    address = check_address(settings.ray_address)
    ray = import_ray()
    if ray.is_initialized():
        return ray
    # Quiet, bounded Ray in a shared process: no repeated-log folding surprises, no
    # worker logs streamed into the SynthLab worker log line by line.
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    options: dict[str, Any] = {"include_dashboard": False, "log_to_driver": False,
                               "ignore_reinit_error": True}
    if address == "local":
        options["object_store_memory"] = settings.ray_object_store_mb * 1024 * 1024
    elif address.startswith("ray://"):
        # Ray Client: the server starts the driver; only the address is ours to give.
        _check_reachable(address)
        options = {"address": address}
    else:
        options["address"] = address
    # Ray Client's server starts a session process per client; under load it has lost one
    # at start-up (its own race, reported as an initialisation failure): a second one starts.
    attempts_left = 2 if address.startswith("ray://") else 1
    while True:
        attempts_left -= 1
        try:
            ray.init(**options)
            if address.startswith("ray://"):
                _check_head_imports_core(ray, address)
            return ray
        except ClusterError:
            raise
        except (ConnectionError, RuntimeError, ValueError) as exc:
            if isinstance(exc, ConnectionAbortedError) and attempts_left:
                continue
            raise ClusterError(f"cannot reach the Ray cluster at {address!r} "
                               f"(SYNTHLAB_RAY_ADDRESS): {_last_line(exc)}"
                               f"{_hint(address, exc)}") from exc


def check_address(address: str) -> str:
    """``auto``, ``local``, ``ray://host[:port]`` (Ray Client) or ``host:port`` (the head's
    GCS, for a host that joined with ``ray start``); anything else is a clear error."""
    address = address.strip() or "auto"
    if address in ("auto", "local"):
        return address
    scheme, has_scheme, rest = address.partition("://")
    if has_scheme and scheme != "ray":
        raise ClusterError(f"SYNTHLAB_RAY_ADDRESS={address!r}: use auto, local, "
                           f"ray://HOST:10001 (Ray Client) or HOST:6379 (a joined cluster's head)")
    host, port = _host_port(rest if has_scheme else address)
    if not host or (port is None and not has_scheme) or port == -1:
        raise ClusterError(f"SYNTHLAB_RAY_ADDRESS={address!r} is not an address: use auto, local, "
                           f"ray://HOST:10001 (Ray Client) or HOST:6379 (a joined cluster's head)")
    return address


# Seconds to wait for the Ray Client port to accept a connection before saying it is down
# (Ray itself retries for about 30 s without saying why).
CLIENT_PORT_TIMEOUT = 5.0


def _host_port(target: str) -> tuple[str, int | None]:
    """``host:port`` -> (host, port); no port -> None; a port that is no number -> -1."""
    host, colon, port = target.rpartition(":")
    if not colon:
        return target, None
    return host.strip("[]"), int(port) if port.isdigit() else -1


def _check_reachable(address: str) -> None:
    host, port = _host_port(address.removeprefix("ray://"))
    port = port or 10001  # Ray Client's default
    try:
        socket.create_connection((host, port), timeout=CLIENT_PORT_TIMEOUT).close()
    except OSError as exc:
        raise ClusterError(f"nothing answers at {host}:{port} (SYNTHLAB_RAY_ADDRESS={address}): "
                           f"{exc.strerror or exc}. Is the head running, with its Ray Client "
                           f"server (`ray start --head` opens port 10001), and is the port open "
                           f"from this host?") from exc


def _check_head_imports_core(ray: Any, address: str) -> None:  # noqa: ANN401
    """A Ray Client's driver runs on the head, which unpickles SynthLab's functions there:
    without ``core`` on its Python path every job would fail with a bare import error."""
    try:
        ray.put(this_host)  # a function pickled by reference: the head imports core.cluster
    except ModuleNotFoundError as exc:
        ray.shutdown()
        raise ClusterError(f"the Ray cluster at {address} cannot import SynthLab's code "
                           f"({exc}): start `ray start` on every host with PYTHONPATH set to "
                           f"a checkout of this commit (README, \"Scale out with Ray\")") from exc


def _hint(address: str, exc: BaseException) -> str:
    if "ray[client]" in str(exc):
        return "; install it with pip install -r requirements-ray.txt"
    if address.startswith("ray://") and os.environ.get("RAY_AUTH_MODE", "") != "token":
        # Ray (2.5x) turns token authentication on by default for the clusters it starts,
        # and a Ray Client only sends the token when told to; the server then says nothing
        # back, so the client just times out.
        return (". If the cluster uses token authentication (Ray's default), set "
                "RAY_AUTH_MODE=token here and give this host the cluster's token "
                "(RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH, or a copy of the head's "
                "~/.ray/auth_token)")
    return ""


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


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
