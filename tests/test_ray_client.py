"""The ``ray`` backend through Ray Client (``SYNTHLAB_RAY_ADDRESS=ray://host:port``).

A real head node (``ray start --head --block`` on 127.0.0.1, private ports and temp folder,
token authentication as Ray starts it by default) serves a real SynthLab worker process that
connects as a Ray Client: a train job runs through it, and the Admin page (through
``python -m core cluster --json``) lists the head. A bad or unreachable address is a clear
error, quickly, there and in the library. The clients run in their
own processes: one process holds one Ray connection, and the other Ray tests hold theirs.
"""

from __future__ import annotations

import dataclasses
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
HEAD_START_TIMEOUT = 120  # seconds; `ray start` takes 10-20 s on a loaded 2-core box


def _free_ports(count: int) -> list[int]:
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def _accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
        return True
    except OSError:
        return False


@pytest.fixture(scope="module")
def ray_head():
    """A head node with a Ray Client server; yields (address, the env a client needs, its
    temp folder)."""
    pytest.importorskip("ray")
    pytest.importorskip("grpc", reason="Ray Client needs ray[client] (requirements-ray.txt)")
    # Short: Ray's Unix sockets live under it, and their paths have a length limit.
    temp = Path(tempfile.mkdtemp(prefix="rayc", dir="/tmp"))
    token = temp / "token"
    token.write_text(secrets.token_hex(32))
    gcs_port, client_port = _free_ports(2)
    # The cluster's token, as `ray start` would generate it, in a file of our own (not
    # ~/.ray/auth_token); every client of this head must present it.
    auth = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token)}
    # Workers import `core` from the checkout, as the README tells each host to have it.
    env = {**os.environ, **auth, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    ray_cli = Path(sys.executable).with_name("ray")
    head = subprocess.Popen(
        [str(ray_cli) if ray_cli.exists() else "ray", "start", "--head", "--block",
         "--node-ip-address=127.0.0.1", f"--port={gcs_port}",
         f"--ray-client-server-port={client_port}", "--num-cpus=2", "--num-gpus=0",
         "--include-dashboard=false", "--disable-usage-stats", f"--temp-dir={temp}"],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + HEAD_START_TIMEOUT
        while not _accepts(client_port):
            if head.poll() is not None:
                pytest.fail(f"ray start failed: {head.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the Ray head's client port never opened")
            time.sleep(0.2)
        yield f"ray://127.0.0.1:{client_port}", auth, temp
    finally:
        _stop(head)
        shutil.rmtree(temp, ignore_errors=True)


def _stop(head: subprocess.Popen) -> None:
    """SIGTERM to `ray start --block` stops every process it started; then make sure."""
    import psutil

    try:
        started = psutil.Process(head.pid).children(recursive=True)
    except psutil.Error:
        started = []
    head.send_signal(signal.SIGTERM)
    try:
        head.wait(30)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait(10)
    _, alive = psutil.wait_procs(started, timeout=15)
    for process in alive:
        process.kill()


def _client_server_log(temp: Path) -> str:
    """The tail of the head's Ray Client server logs (why a client was turned away)."""
    logs = sorted((temp / "session_latest" / "logs").glob("ray_client_server*.err"))
    return "\n".join(f"{path.name}: {path.read_text(errors='replace')[-1500:]}" for path in logs)


def _client_env(settings, address: str, auth: dict[str, str]) -> dict[str, str]:  # noqa: ANN001
    return {**os.environ, **auth, "SYNTHLAB_HOME": str(settings.home_path),
            "SYNTHLAB_EXECUTION_BACKEND": "ray", "SYNTHLAB_RAY_ADDRESS": address,
            "SYNTHLAB_TORCH_THREADS": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def _admin_cluster_tab(monkeypatch, env: dict[str, str]):  # noqa: ANN001
    """The Admin page with ``env``, after a click on "Show the cluster's nodes" (the page
    asks ``python -m core cluster --json`` in a child process)."""
    from streamlit.testing.v1 import AppTest

    for name, value in env.items():
        monkeypatch.setenv(name, value)
    at = AppTest.from_file(str(ROOT / "pages" / "admin.py"), default_timeout=120).run()
    assert not at.exception
    return at.button(key="cluster_refresh").click().run()


def test_a_bad_or_unreachable_ray_address_is_a_clear_error_at_once(settings, monkeypatch):
    from core.cluster import ClusterError, cluster_report

    on_ray = dataclasses.replace(settings, execution_backend="ray")
    for address, says in (("http://head:10001", "use auto, local, ray://HOST:10001"),
                          ("ray://", "is not an address"),
                          ("head-without-port", "is not an address")):
        with pytest.raises(ClusterError, match=says):
            cluster_report(dataclasses.replace(on_ray, ray_address=address))
    [port] = _free_ports(1)  # closed again: nothing listens there
    address = f"ray://127.0.0.1:{port}"
    started = time.monotonic()
    with pytest.raises(ClusterError, match=f"nothing answers at 127.0.0.1:{port}.*Ray Client"):
        cluster_report(dataclasses.replace(on_ray, ray_address=address))
    assert time.monotonic() - started < 10  # not Ray's own 30 s of silent retries
    import ray

    assert not ray.is_initialized()
    # The Admin page says the same, in one line, and goes on working.
    at = _admin_cluster_tab(monkeypatch, {"SYNTHLAB_EXECUTION_BACKEND": "ray",
                                          "SYNTHLAB_RAY_ADDRESS": address})
    assert [e.value for e in at.error] == [
        f"No cluster report: error: nothing answers at 127.0.0.1:{port} "
        f"(SYNTHLAB_RAY_ADDRESS={address}): Connection refused. Is the head running, with its "
        f"Ray Client server (`ray start --head` opens port 10001), and is the port open from "
        f"this host?"]


@pytest.mark.slow
def test_a_train_job_runs_through_ray_client_and_the_admin_page_lists_the_head(settings, ray_head,
                                                                              monkeypatch):
    """A real worker process, a Ray Client of the head, trains a run there and writes its
    checkpoints, model and metrics here; the Admin page lists the head's node."""
    from core.jobs import get_job, job_events
    from core.training.checkpoint import LAST_FILE, MODEL_FILE, run_dir
    from core.training.data import DataSpec
    from core.training.experiments import ExperimentRequest, create_runs, get_run
    from core.training.jobs import submit_training
    from core.training.trainer import TrainConfig
    from test_training_fixtures import add_fruit_images

    address, auth, temp = ray_head
    env = _client_env(settings, address, auth)
    add_fruit_images(settings, "orchard", per_class=6, seed=3)
    request = ExperimentRequest(data=DataSpec(mode="real"),
                                train=TrainConfig(epochs=2, image_size=16, batch_size=8,
                                                  widths={"conv1": 4, "conv2": 8, "hidden": 16}))
    [run_id] = create_runs(request, created_by="tester", settings=settings)
    job_id = submit_training([run_id], title="through Ray Client", created_by="tester",
                             settings=settings)
    worker = subprocess.run([sys.executable, "-m", "core", "worker", "--once"], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=300)
    assert worker.returncode == 0, worker.stderr[-3000:]
    job = get_job(job_id, settings)
    assert job.status == "done", (job.error, worker.stderr[-3000:], _client_server_log(temp))
    run = get_run(run_id, settings)
    assert run.status == "done" and len(run.history) == 2
    assert run.metrics["_train"]["host"] == socket.gethostname()
    assert 0 <= run.metrics["real_test"]["accuracy"] <= 1
    assert (run_dir(settings, run_id) / MODEL_FILE).is_file()
    assert (run_dir(settings, run_id) / LAST_FILE).is_file()
    assert any("goes to the Ray cluster" in e.message for e in job_events(job_id, settings=settings))

    # The Admin page's Cluster tab (through `python -m core cluster --json`) lists the head.
    at = _admin_cluster_tab(monkeypatch, {**auth, "SYNTHLAB_EXECUTION_BACKEND": "ray",
                                          "SYNTHLAB_RAY_ADDRESS": address})
    assert not at.error, [e.value for e in at.error]
    metrics = {metric.label: metric.value for metric in at.metric}
    assert (metrics["Nodes"], metrics["GPUs"], metrics["GPUs free"]) == ("1", "0", "0")
    nodes = at.dataframe[0].value
    assert nodes[["alive", "CPUs", "GPUs"]].values.tolist() == [[True, 2.0, 0.0]]
